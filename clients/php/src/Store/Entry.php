<?php
declare(strict_types=1);

namespace Failsoft\Store;

/** What every store checks of an entry it reads back (a file edited by hand, a cache shared with others). */
final class Entry
{
    /** @return array{doc: array<string, mixed>, etag: string, checked: float}|null */
    public static function check(mixed $entry): ?array
    {
        if (!is_array($entry) || !is_array($entry['doc'] ?? null) || !array_key_exists('value', $entry['doc'])
            || !is_string($entry['etag'] ?? null) || !is_numeric($entry['checked'] ?? null)) {
            return null;
        }
        return ['doc' => $entry['doc'], 'etag' => $entry['etag'], 'checked' => (float) $entry['checked']];
    }

    private function __construct()
    {
    }
}
