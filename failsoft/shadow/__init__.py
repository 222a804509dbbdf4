"""Shadow deployment: candidates get a copy of live traffic, are judged on ground truth as it arrives, and
are promoted (and rolled back) by policy."""
