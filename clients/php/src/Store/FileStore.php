<?php
declare(strict_types=1);

namespace Failsoft\Store;

/**
 * One JSON file per model in a folder of its own (made 0700 when missing). Written to a temporary file
 * and renamed, so a reader sees the old entry or the new one, never half of one; a file that does not
 * read back is ignored.
 */
final class FileStore implements DefaultStore
{
    public function __construct(private readonly string $dir)
    {
    }

    public function get(string $key): ?array
    {
        $raw = @file_get_contents($this->path($key));
        if ($raw === false) {
            return null;
        }
        try {
            return Entry::check(json_decode($raw, true, 64, JSON_THROW_ON_ERROR));
        } catch (\JsonException) {
            return null;
        }
    }

    public function set(string $key, array $entry): void
    {
        if (!is_dir($this->dir) && !@mkdir($this->dir, 0700, true) && !is_dir($this->dir)) {
            return;
        }
        $path = $this->path($key);
        $tmp = $path . '.' . bin2hex(random_bytes(4)) . '.tmp';
        $json = json_encode($entry, JSON_UNESCAPED_SLASHES | JSON_PRESERVE_ZERO_FRACTION
            | JSON_INVALID_UTF8_SUBSTITUTE | JSON_PARTIAL_OUTPUT_ON_ERROR);
        if ($json === false || @file_put_contents($tmp, $json) === false || !@rename($tmp, $path)) {
            @unlink($tmp);
        }
    }

    private function path(string $key): string
    {
        return $this->dir . '/' . preg_replace('/[^A-Za-z0-9_.-]/', '_', $key) . '.json';
    }
}
