"""The frame a batch travels in from the serving process to the log writer: sequence number (u64),
record count (u32) and length (u32), little-endian, then the batch document."""

import struct

HEADER = struct.Struct("<QII")
