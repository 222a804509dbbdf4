<?php
declare(strict_types=1);

namespace Failsoft\Tests\Unit;

use Failsoft\Store\ApcuStore;
use Failsoft\Store\FileStore;
use Failsoft\Store\MemoryStore;
use Failsoft\Store\Psr16Store;
use PHPUnit\Framework\TestCase;
use Psr\SimpleCache\CacheInterface;

final class StoreTest extends TestCase
{
    private string $dir;

    protected function setUp(): void
    {
        $this->dir = sys_get_temp_dir() . '/failsoft-store-test-' . bin2hex(random_bytes(4));
    }

    protected function tearDown(): void
    {
        foreach (glob($this->dir . '/*') ?: [] as $file) {
            unlink($file);
        }
        @rmdir($this->dir);
    }

    private static function entry(mixed $value): array
    {
        return ['doc' => ['value' => $value, 'version' => '3'], 'etag' => '"e"', 'checked' => 1.5];
    }

    public function testAFileStoreKeepsEntriesAcrossProcessesAndIgnoresWhatDoesNotReadBack(): void
    {
        $store = new FileStore($this->dir);
        self::assertNull($store->get('failsoft_default_abc'));
        $store->set('failsoft_default_abc', self::entry(['top-1', 'top-2']));
        self::assertSame(self::entry(['top-1', 'top-2']), (new FileStore($this->dir))->get('failsoft_default_abc'));
        self::assertSame('0700', substr(sprintf('%o', fileperms($this->dir)), -4));
        self::assertSame(['failsoft_default_abc.json'], array_map('basename', glob($this->dir . '/*')), 'no temporary file left');
        file_put_contents($this->dir . '/failsoft_default_abc.json', '{"doc": {"val');
        self::assertNull($store->get('failsoft_default_abc'), 'half a file is no entry');
        file_put_contents($this->dir . '/failsoft_default_abc.json', '{"doc": {"value": 1}}');
        self::assertNull($store->get('failsoft_default_abc'), 'an entry without its ETag and time is none');
        self::assertNull($store->get('../../etc/passwd'));
    }

    public function testAFileStoreWhoseFolderCannotBeMadeKeepsNothingAndSaysNothing(): void
    {
        $store = new FileStore('/proc/failsoft-cannot-be-here');
        $store->set('k', self::entry(1));
        self::assertNull($store->get('k'));
    }

    public function testAPsr16CacheHoldsThemAndOneThatFailsIsNoCache(): void
    {
        $cache = new ArrayCache();
        $store = new Psr16Store($cache, 3600);
        $store->set('failsoft_default_abc', self::entry(0.2));
        self::assertSame(self::entry(0.2), $store->get('failsoft_default_abc'));
        self::assertSame(3600, $cache->ttls['failsoft_default_abc']);
        $cache->broken = true;
        $store->set('failsoft_default_abc', self::entry(0.3));
        self::assertNull($store->get('failsoft_default_abc'));
    }

    public function testApcuWhereItIsOn(): void
    {
        if (!ApcuStore::available()) {
            self::markTestSkipped('APCu is not on (php-apcu, and apc.enable_cli=1 on the command line)');
        }
        $store = new ApcuStore();
        $key = 'failsoft_test_' . bin2hex(random_bytes(4));
        self::assertNull($store->get($key));
        $store->set($key, self::entry(['top-1']));
        self::assertSame(self::entry(['top-1']), $store->get($key));
        apcu_store($key, ['doc' => 'not an entry']);
        self::assertNull($store->get($key));
        apcu_delete($key);
    }

    public function testMemory(): void
    {
        $store = new MemoryStore();
        $store->set('k', self::entry(1));
        self::assertSame(self::entry(1), $store->get('k'));
    }
}

/** The smallest PSR-16 cache, with a switch that makes every call fail. */
final class ArrayCache implements CacheInterface
{
    public array $items = [];
    public array $ttls = [];
    public bool $broken = false;

    private function check(): void
    {
        if ($this->broken) {
            throw new \RuntimeException('cache down');
        }
    }

    public function get($key, $default = null): mixed
    {
        $this->check();
        return $this->items[$key] ?? $default;
    }

    public function set($key, $value, $ttl = null): bool
    {
        $this->check();
        $this->items[$key] = $value;
        $this->ttls[$key] = $ttl;
        return true;
    }

    public function delete($key): bool
    {
        unset($this->items[$key]);
        return true;
    }

    public function clear(): bool
    {
        $this->items = [];
        return true;
    }

    public function getMultiple($keys, $default = null): iterable
    {
        return [];
    }

    public function setMultiple($values, $ttl = null): bool
    {
        return true;
    }

    public function deleteMultiple($keys): bool
    {
        return true;
    }

    public function has($key): bool
    {
        return isset($this->items[$key]);
    }
}
