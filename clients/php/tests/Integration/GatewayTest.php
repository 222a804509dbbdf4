<?php
declare(strict_types=1);

namespace Failsoft\Tests\Integration;

use Failsoft\Client;
use Failsoft\Exception\UnknownModel;
use Failsoft\Reason;
use Failsoft\Store\FileStore;
use Failsoft\Store\MemoryStore;
use Failsoft\Transport\Psr18Transport;
use PHPUnit\Framework\TestCase;

/**
 * Against a real `failsoft serve` and servers that misbehave, started by tests/php/test_php_client.py,
 * which passes their addresses in FAILSOFT_TEST_* and the Python client's answers to the same rows.
 */
final class GatewayTest extends TestCase
{
    private const DEADLINE = 0.5;

    private static function url(string $which): string
    {
        $url = getenv('FAILSOFT_TEST_' . strtoupper($which));
        if ($url === false || $url === '') {
            if (getenv('CI')) {
                self::fail("FAILSOFT_TEST_$which is not set: run these through pytest tests/php");
            }
            self::markTestSkipped('no gateway: these run through pytest tests/php');
        }
        return $url;
    }

    public function testAnswersAndProvenanceAreThoseThePythonClientGets(): void
    {
        $expected = json_decode((string) file_get_contents(self::url('expected')), true, 64, JSON_THROW_ON_ERROR);
        $client = new Client(self::url('gateway'), deadline: 5.0, store: new MemoryStore());
        foreach ($expected as $case) {
            $p = $client->predict($case['model'], $case['inputs'], $case['id']);
            $got = $p->toArray();
            foreach (['id', 'model', 'version', 'tier', 'degraded', 'reason', 'outputs', 'skips', 'warnings'] as $key) {
                $want = array_key_exists($key, $case['outcome']) ? $case['outcome'][$key] : [];  // no warnings: []
                self::assertSame($want, $got[$key], "$key of {$case['id']}");
            }
            self::assertGreaterThan(0, $p->latencyMs);
        }
    }

    public function testABatchAndTheXRequestId(): void
    {
        $client = new Client(self::url('gateway'), deadline: 5.0, store: new MemoryStore());
        $p = $client->predictBatch('churn', [['x' => 1], ['x' => 5]]);
        self::assertSame([0.1, 0.5], $p->value);
        self::assertMatchesRegularExpression('/^php-/', $p->requestId);
    }

    public function testTheCallersMistakes(): void
    {
        $client = new Client(self::url('gateway'), deadline: 5.0, store: new MemoryStore(), strict: true);
        try {
            $client->predict('rec', ['user_id' => 1]);
            self::fail('no exception');
        } catch (UnknownModel $err) {
            self::assertSame(['churn', 'recs'], $err->known);
        }
        $safe = new Client(self::url('gateway'), deadline: 5.0, store: new MemoryStore(), defaults: ['*' => []]);
        $p = $safe->predict('rec', ['user_id' => 1]);
        self::assertSame([[], true, Reason::REJECTED], [$p->value, $p->degraded, $p->reason]);
        self::assertStringContainsString("did you mean 'recs'", $p->detail());
    }

    /** @return array<string, array{0: string, 1: string}> */
    public static function broken(): array
    {
        return ['stopped' => ['refused', Reason::UNREACHABLE], 'hung' => ['hanging', Reason::TIMEOUT],
            'answering 500' => ['failing', Reason::GATEWAY_ERROR], 'answering garbage' => ['garbage', Reason::BAD_ANSWER]];
    }

    /** @dataProvider broken */
    public function testAGatewayGoneBadGivesItsOwnDefaultWithinTheDeadline(string $which, string $reason): void
    {
        $dir = sys_get_temp_dir() . '/failsoft-php-it-' . bin2hex(random_bytes(4));
        try {
            $up = new Client(self::url('gateway'), deadline: 5.0, store: new FileStore($dir));
            self::assertFalse($up->predict('recs', ['user_id' => 3])->degraded);
            $kept = $up->keptDefault('recs');
            $top = json_decode((string) file_get_contents(self::url('gateway') . '/v1/models/recs/default'), true);
            self::assertSame($top['value'], $kept['value'], 'the gateway default, kept after the first answer');
            self::assertCount(10, $kept['value']);

            // the site's next page view, in a new process (a new client on the same store), finds it gone bad
            $down = new Client(self::url($which), deadline: self::DEADLINE, store: new FileStore($dir),
                defaults: ['recs' => ['a hand-kept list']]);
            $started = microtime(true);
            $p = $down->predict('recs', ['user_id' => 3]);
            $took = microtime(true) - $started;
            self::assertSame([$top['value'], 'client-cache', $top['version'], true, $reason],
                [$p->value, $p->tier, $p->version, $p->degraded, $p->reason]);
            // the client's own measure against the deadline; the outer bound is generous for a busy machine
            self::assertLessThan(self::DEADLINE * 1000 + 50, $p->latencyMs, $p->detail());
            self::assertLessThan(self::DEADLINE + 1.0, $took);
        } finally {
            foreach (glob("$dir/*") ?: [] as $f) {
                unlink($f);
            }
            @rmdir($dir);
        }
    }

    public function testThroughAPsr18ClientGuzzle(): void
    {
        if (!class_exists(\GuzzleHttp\Client::class) || !class_exists(\Nyholm\Psr7\Factory\Psr17Factory::class)) {
            self::fail('Guzzle and Nyholm PSR-7 are needed (Debian: php-guzzlehttp-guzzle php-nyholm-psr7)');
        }
        $factory = new \Nyholm\Psr7\Factory\Psr17Factory();
        $transport = fn (float $t) => new Psr18Transport(
            new \GuzzleHttp\Client(['timeout' => $t, 'connect_timeout' => 0.25, 'http_errors' => false]), $factory, $factory);
        $client = new Client(self::url('gateway'), deadline: 5.0, store: new MemoryStore(), transport: $transport(5.0));
        $p = $client->predict('churn', ['x' => 3]);
        self::assertSame([0.3, 'cpu', false], [$p->value, $p->tier, $p->degraded]);
        foreach (self::broken() as [$which, $reason]) {
            $down = new Client(self::url($which), deadline: self::DEADLINE, store: new MemoryStore(),
                transport: $transport(self::DEADLINE), defaults: ['churn' => 0.2]);
            $p = $down->predict('churn', ['x' => 3]);
            self::assertSame([0.2, 'client-default', $reason], [$p->value, $p->tier, $p->reason], "$which: {$p->detail()}");
        }
    }
}
