<?php
declare(strict_types=1);

namespace Failsoft\Tests;

use Failsoft\Exception\TransportFailed;
use Failsoft\Transport\Response;
use Failsoft\Transport\Transport;

/** Answers from a script: each entry a Response, a TransportFailed to throw, or a callable of the call.
 * Every call is recorded with the budgets it was given. */
final class FakeTransport implements Transport
{
    /** @var list<array{method: string, url: string, headers: array<string, string>, body: ?string, timeout: float, connect: float}> */
    public array $calls = [];

    /** @param list<Response|TransportFailed|callable> $script */
    public function __construct(public array $script = [])
    {
    }

    public function send(string $method, string $url, array $headers, ?string $body, float $timeout,
                         float $connectTimeout): Response
    {
        $this->calls[] = ['method' => $method, 'url' => $url, 'headers' => $headers, 'body' => $body,
            'timeout' => $timeout, 'connect' => $connectTimeout];
        $next = array_shift($this->script) ?? new TransportFailed('nothing scripted');
        if (is_callable($next)) {
            $next = $next($method, $url, $headers, $body);
        }
        if ($next instanceof TransportFailed) {
            throw $next;
        }
        return $next;
    }

    /** @param array<string, mixed> $doc */
    public static function json(array $doc, int $status = 200, array $headers = []): Response
    {
        return new Response($status, $headers + ['content-type' => 'application/json'], json_encode($doc));
    }

    /** @return array<string, mixed> a gateway answer */
    public static function answer(mixed $outputs, string $tier = 'heavy', bool $degraded = false,
                                  ?string $reason = null, string $id = 'r-1'): array
    {
        return ['id' => $id, 'model' => 'recs', 'version' => '3', 'tier' => $tier, 'degraded' => $degraded,
            'reason' => $reason, 'outputs' => $outputs, 'latency_ms' => 1.5,
            'skips' => $degraded ? [['heavy', $reason, 'took too long']] : []];
    }

    /** @return array<string, mixed> the gateway's safe default document */
    public static function defaultDoc(mixed $value): array
    {
        return ['model' => 'recs', 'version' => '3', 'tier' => 'top10', 'value' => $value, 'origin' => 'static',
            'pinned' => false, 'refreshed_at' => null, 'age_s' => null];
    }
}
