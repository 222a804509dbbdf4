<?php
declare(strict_types=1);

namespace Failsoft\Store;

/** For this PHP process only (a worker, a long-running command, tests). */
final class MemoryStore implements DefaultStore
{
    /** @var array<string, array{doc: array<string, mixed>, etag: string, checked: float}> */
    private array $entries = [];

    public function get(string $key): ?array
    {
        return $this->entries[$key] ?? null;
    }

    public function set(string $key, array $entry): void
    {
        $this->entries[$key] = $entry;
    }
}
