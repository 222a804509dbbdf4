<?php
declare(strict_types=1);

namespace Failsoft\Store;

use Psr\SimpleCache\CacheInterface;

/**
 * Your PSR-16 cache (Symfony's, Laravel's, a Redis one). No expiry by default: an old default is still
 * the best answer there is when the gateway is gone; the client refreshes it while the gateway is up.
 */
final class Psr16Store implements DefaultStore
{
    public function __construct(private readonly CacheInterface $cache, private readonly ?int $ttl = null)
    {
    }

    public function get(string $key): ?array
    {
        try {
            return Entry::check($this->cache->get($key));
        } catch (\Throwable) {
            return null;
        }
    }

    public function set(string $key, array $entry): void
    {
        try {
            $this->cache->set($key, $entry, $this->ttl);
        } catch (\Throwable) {
            // a cache that fails keeps nothing; the next answer tries again
        }
    }
}
