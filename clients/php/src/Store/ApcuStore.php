<?php
declare(strict_types=1);

namespace Failsoft\Store;

/** APCu: shared by every worker of one PHP-FPM pool, gone with a restart (the gateway refills it). */
final class ApcuStore implements DefaultStore
{
    public static function available(): bool
    {
        return function_exists('apcu_enabled') && apcu_enabled();
    }

    public function get(string $key): ?array
    {
        $ok = false;
        $entry = apcu_fetch($key, $ok);
        return $ok ? Entry::check($entry) : null;
    }

    public function set(string $key, array $entry): void
    {
        apcu_store($key, $entry);
    }
}
