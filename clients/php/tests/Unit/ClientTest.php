<?php
declare(strict_types=1);

namespace Failsoft\Tests\Unit;

use Failsoft\Client;
use Failsoft\Exception\FailsoftException;
use Failsoft\Exception\InvalidRequest;
use Failsoft\Exception\NoDefault;
use Failsoft\Exception\TransportFailed;
use Failsoft\Exception\UnknownModel;
use Failsoft\Reason;
use Failsoft\Store\MemoryStore;
use Failsoft\Tests\FakeTransport;
use Failsoft\Transport\Response;
use PHPUnit\Framework\TestCase;

final class ClientTest extends TestCase
{
    private const TOP = ['top-1', 'top-2', 'top-3'];

    private function client(FakeTransport $t, array $options = []): Client
    {
        return new Client('http://gw:8000/', ...($options + ['transport' => $t, 'store' => new MemoryStore()]));
    }

    public function testAGatewayAnswerComesBackWithItsProvenance(): void
    {
        $t = new FakeTransport([FakeTransport::json(FakeTransport::answer(['a', 'b'], 'cpu', true, 'timeout', 'mine')),
            FakeTransport::json(FakeTransport::defaultDoc(self::TOP), 200, ['etag' => '"e1"'])]);
        $p = $this->client($t)->predict('recs', ['user_id' => 7], 'mine');
        self::assertSame([['a', 'b'], 'recs', '3', 'cpu', true, 'timeout', 1.5, 'mine'],
            [$p->value, $p->model, $p->version, $p->tier, $p->degraded, $p->reason, $p->latencyMs, $p->requestId]);
        self::assertTrue($p->fromGateway());
        self::assertSame('took too long', $p->detail());
        $call = $t->calls[0];
        self::assertSame(['POST', 'http://gw:8000/v1/models/recs/predict'], [$call['method'], $call['url']]);
        self::assertSame('{"inputs":{"user_id":7},"id":"mine"}', $call['body']);
        self::assertSame('mine', $call['headers']['X-Request-Id']);
        self::assertSame('application/json', $call['headers']['Content-Type']);
    }

    public function testEveryCallHasARequestIdInTheHeaderAndTheBody(): void
    {
        $t = new FakeTransport([FakeTransport::json(FakeTransport::answer(1)), FakeTransport::json(FakeTransport::answer(1))]);
        $c = $this->client($t, ['refreshSeconds' => 3600]);
        $c->predict('recs', []);
        $c->predict('recs', []);
        $ids = array_map(fn ($call) => $call['headers']['X-Request-Id'] ?? null, array_filter($t->calls, fn ($c) => $c['method'] === 'POST'));
        $ids = array_values($ids);
        self::assertCount(2, array_unique($ids));
        self::assertMatchesRegularExpression('/^php-[0-9a-f]{8}-1$/', $ids[0]);
        self::assertStringContainsString('"id":"' . $ids[0] . '"', $t->calls[0]['body']);
        self::assertStringContainsString('"inputs":{}', $t->calls[0]['body'], 'an empty row is an object, not a list');
    }

    /** @return array<string, array{0: Response|TransportFailed, 1: string, 2: string}> */
    public static function failures(): array
    {
        return [
            'refused' => [new TransportFailed('Failed to connect: Connection refused', Reason::UNREACHABLE, true), Reason::UNREACHABLE, 'refused'],
            'hung' => [new TransportFailed('no answer within 2000 ms', Reason::TIMEOUT), Reason::TIMEOUT, 'within'],
            'a 500' => [FakeTransport::json(['error' => 'boom'], 500), Reason::GATEWAY_ERROR, 'HTTP 500: boom'],
            'a 503 page' => [new Response(503, [], '<html>Service Unavailable</html>'), Reason::GATEWAY_ERROR, 'Service Unavailable'],
            'garbage' => [new Response(200, [], '<html>It works!</html>'), Reason::BAD_ANSWER, 'not JSON'],
            'json, not an answer' => [FakeTransport::json(['recommendations' => [1, 2]]), Reason::BAD_ANSWER, 'without the answer fields'],
            'a redirect' => [new Response(302, ['location' => '/login'], ''), Reason::BAD_ANSWER, 'HTTP 302'],
        ];
    }

    /** @dataProvider failures */
    public function testTheGatewaysKeptDefaultAnswersWhenItCannot(Response|TransportFailed $what, string $reason, string $says): void
    {
        $store = new MemoryStore();
        $warm = new FakeTransport([FakeTransport::json(FakeTransport::answer(['x'])),
            FakeTransport::json(FakeTransport::defaultDoc(self::TOP), 200, ['etag' => '"e1"'])]);
        $this->client($warm, ['store' => $store])->predict('recs', ['user_id' => 1]);
        self::assertCount(2, $warm->calls, 'the first answer fetched the default');
        self::assertSame('GET', $warm->calls[1]['method']);
        self::assertSame('http://gw:8000/v1/models/recs/default', $warm->calls[1]['url']);

        $p = $this->client(new FakeTransport([$what]), ['store' => $store, 'defaults' => ['recs' => ['static']]])
            ->predict('recs', ['user_id' => 1]);
        self::assertSame([self::TOP, 'client-cache', '3', true, $reason], [$p->value, $p->tier, $p->version, $p->degraded, $p->reason]);
        self::assertFalse($p->fromGateway());
        self::assertSame('gateway', $p->skips[0][0]);
        self::assertStringContainsString($says, $p->detail());
    }

    public function testADefaultInCodeIsTheLastResortThenNullOrNoDefault(): void
    {
        $down = fn () => new FakeTransport([new TransportFailed('refused', Reason::UNREACHABLE, true)]);
        $p = $this->client($down(), ['defaults' => ['recs' => self::TOP]])->predict('recs', []);
        self::assertSame([self::TOP, 'client-default', Reason::UNREACHABLE], [$p->value, $p->tier, $p->reason]);
        $p = $this->client($down(), ['defaults' => ['*' => 0.5]])->predict('churn', []);
        self::assertSame([0.5, 'client-default'], [$p->value, $p->tier]);
        $p = $this->client($down())->predict('recs', []);
        self::assertSame([null, 'client-none', true], [$p->value, $p->tier, $p->degraded]);
        self::assertStringContainsString("give defaults: ['recs' => ...]", $p->detail());
        $this->expectException(NoDefault::class);
        $this->expectExceptionMessage("could not answer for 'recs' (refused)");
        $this->client($down(), ['strict' => true])->predict('recs', []);
    }

    public function testABatchFallsBackToOneDefaultPerRow(): void
    {
        $t = new FakeTransport([new TransportFailed('refused', Reason::UNREACHABLE, true)]);
        $p = $this->client($t, ['defaults' => ['churn' => 0.2]])->predictBatch('churn', [['x' => 1], ['x' => 2], ['x' => 3]]);
        self::assertSame([0.2, 0.2, 0.2], $p->value);
        self::assertSame('{"inputs":[{"x":1},{"x":2},{"x":3}],"id":"' . $p->requestId . '"}', $t->calls[0]['body']);
    }

    public function testACallersMistakeIsADegradedDefaultOrInStrictModeAnException(): void
    {
        $unknown = FakeTransport::json(['error' => "unknown model 'rec'; this portfolio serves churn, recs"], 404);
        $p = $this->client(new FakeTransport([$unknown]), ['defaults' => ['*' => []]])->predict('rec', []);
        self::assertSame(['client-default', Reason::REJECTED], [$p->tier, $p->reason]);
        self::assertStringContainsString('this portfolio serves churn, recs', $p->detail());
        try {
            $this->client(new FakeTransport([$unknown]), ['strict' => true])->predict('rec', []);
            self::fail('no exception');
        } catch (UnknownModel $err) {
            self::assertSame(['rec', ['churn', 'recs'], 404], [$err->model, $err->known, $err->status]);
            self::assertInstanceOf(FailsoftException::class, $err);
        }
        $bad = FakeTransport::json(['error' => 'inputs is an empty list'], 400);
        try {
            $this->client(new FakeTransport([$bad]), ['strict' => true])->predictBatch('recs', []);
            self::fail('no exception');
        } catch (InvalidRequest $err) {
            self::assertSame('the gateway refused the call (HTTP 400): inputs is an empty list', $err->getMessage());
        }
        $notRoot = new Response(404, [], 'Not Found');
        $this->expectExceptionMessage("the URL must be the gateway's root");
        $this->client(new FakeTransport([$notRoot]), ['strict' => true])->predict('recs', []);
    }

    public function testInputsThatAreNotJsonAreTheCallersMistakeNotACrash(): void
    {
        $t = new FakeTransport();
        $p = $this->client($t, ['defaults' => ['*' => 0.1]])->predict('churn', ['x' => NAN]);
        self::assertSame([0.1, Reason::REJECTED], [$p->value, $p->reason]);
        self::assertStringContainsString('cannot be sent as JSON', $p->detail());
        self::assertSame([], $t->calls, 'nothing was sent');
    }

    public function testTheDeadlineIsTheBudgetOfTheWholeCall(): void
    {
        $t = new FakeTransport([FakeTransport::json(FakeTransport::answer(1))]);
        $this->client($t, ['deadline' => 0.5, 'connectTimeout' => 0.1, 'refreshSeconds' => 3600])->predict('recs', []);
        self::assertEqualsWithDelta(0.5, $t->calls[0]['timeout'], 0.05);
        self::assertEqualsWithDelta(0.1, $t->calls[0]['connect'], 0.001);
        // the default's fetch after the answer gets only what is left
        self::assertLessThanOrEqual(0.5, $t->calls[1]['timeout']);
    }

    public function testNoRetryByDefaultAndOneOnARefusedConnectionWhenAsked(): void
    {
        $refused = fn () => new TransportFailed('Connection refused', Reason::UNREACHABLE, true);
        $t = new FakeTransport([$refused(), FakeTransport::json(FakeTransport::answer(1))]);
        self::assertTrue($this->client($t, ['defaults' => ['*' => 0]])->predict('recs', [])->degraded);
        self::assertCount(1, $t->calls);
        $t = new FakeTransport([$refused(), FakeTransport::json(FakeTransport::answer(1)), FakeTransport::json(FakeTransport::defaultDoc(1))]);
        $p = $this->client($t, ['retryRefused' => true])->predict('recs', []);
        self::assertSame(['heavy', false], [$p->tier, $p->degraded]);
        self::assertSame('POST', $t->calls[1]['method']);
        self::assertLessThan($t->calls[0]['timeout'], $t->calls[1]['timeout'], 'the retry has what is left');
        // a timeout is never retried: the deadline is spent
        $t = new FakeTransport([new TransportFailed('no answer', Reason::TIMEOUT), FakeTransport::json(FakeTransport::answer(1))]);
        self::assertTrue($this->client($t, ['retryRefused' => true, 'defaults' => ['*' => 0]])->predict('recs', [])->degraded);
        self::assertCount(1, $t->calls);
    }

    public function testTheKeptDefaultIsRefreshedWithItsEtagOncePerInterval(): void
    {
        $store = new MemoryStore();
        $t = new FakeTransport([
            FakeTransport::json(FakeTransport::answer(1)),
            FakeTransport::json(FakeTransport::defaultDoc(self::TOP), 200, ['etag' => '"e1"']),
            FakeTransport::json(FakeTransport::answer(1)),  // fresh: no check
        ]);
        $c = $this->client($t, ['store' => $store, 'refreshSeconds' => 300]);
        $c->predict('recs', []);
        $c->predict('recs', []);
        self::assertCount(3, $t->calls);
        self::assertSame(self::TOP, $c->keptDefault('recs')['value']);
        // later: the check carries the ETag, and a 304 keeps what is there
        $key = array_key_first((fn () => $this->entries)->call($store));
        $store->set($key, ['checked' => microtime(true) - 301] + $store->get($key));
        $t->script = [FakeTransport::json(FakeTransport::answer(1)), new Response(304, [], '')];
        $c->predict('recs', []);
        self::assertSame('"e1"', $t->calls[4]['headers']['If-None-Match']);
        self::assertSame(self::TOP, $c->keptDefault('recs')['value']);
        self::assertGreaterThan(microtime(true) - 5, $store->get($key)['checked']);
        // a changed default replaces the kept one
        $t->script = [FakeTransport::json(FakeTransport::defaultDoc(['new']), 200, ['etag' => '"e2"'])];
        self::assertSame(['new'], $c->refreshDefault('recs')['value']);
        self::assertSame(['new'], $c->keptDefault('recs')['value']);
        // a gateway that cannot say keeps the old one
        $t->script = [new TransportFailed('refused', Reason::UNREACHABLE, true)];
        self::assertNull($c->refreshDefault('recs'));
        self::assertSame(['new'], $c->keptDefault('recs')['value']);
    }

    public function testABadUrlOrBudgetIsSaidAtOnce(): void
    {
        $this->expectException(\InvalidArgumentException::class);
        $this->expectExceptionMessage('must start with http:// or https://');
        new Client('gw:8000');
    }
}
