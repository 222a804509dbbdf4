<?php
declare(strict_types=1);

namespace Failsoft;

use Failsoft\Exception\InvalidRequest;
use Failsoft\Exception\NoDefault;
use Failsoft\Exception\TransportFailed;
use Failsoft\Exception\UnknownModel;
use Failsoft\Store\ApcuStore;
use Failsoft\Store\DefaultStore;
use Failsoft\Store\FileStore;
use Failsoft\Transport\CurlTransport;
use Failsoft\Transport\Response;
use Failsoft\Transport\Transport;

/**
 * Calls models behind a failsoft gateway. Every call answers within `deadline` seconds and never throws
 * into the page (unless `strict`): when the gateway is unreachable, slow, answers 5xx or something that is
 * not a failsoft answer, the answer is the model's safe default as the gateway last gave it (kept in the
 * store), else a default given here, marked degraded with the reason.
 *
 *     $client = new Failsoft\Client('http://failsoft:8000');
 *     $recs = $client->predict('recs', ['user_id' => 42, 'hour' => 18]);
 *     $recs->value; $recs->tier; $recs->degraded; $recs->reason;
 */
final class Client
{
    private readonly string $baseUrl;
    private readonly Transport $transport;
    private readonly DefaultStore $store;
    private readonly string $idPrefix;
    private int $calls = 0;

    /**
     * @param float $deadline seconds for the whole call, the gateway's answer included
     * @param float $connectTimeout seconds to get a connection (a host that is down costs this, not the deadline)
     * @param array<string, mixed> $defaults per model, the answer of last resort; '*' for any model
     * @param bool $strict a 4xx throws InvalidRequest/UnknownModel, no default at all throws NoDefault
     * @param bool $retryRefused one more try when the connection was refused and time is left (a restarting gateway)
     * @param int $refreshSeconds how often a kept default is checked with the gateway (an ETag: unchanged costs a 304)
     * @param array<string, string> $headers sent with every call (Authorization, say)
     * @param string $storePrefix the kept defaults' keys begin with it (two gateways serving models of the same
     *     name on one site each need their own)
     */
    public function __construct(
        string $baseUrl,
        private readonly float $deadline = 2.0,
        private readonly float $connectTimeout = 0.25,
        private readonly array $defaults = [],
        ?DefaultStore $store = null,
        ?Transport $transport = null,
        private readonly bool $strict = false,
        private readonly bool $retryRefused = false,
        private readonly int $refreshSeconds = 300,
        private readonly array $headers = [],
        private readonly string $storePrefix = 'failsoft_default_',
    ) {
        if (!preg_match('~^https?://~i', $baseUrl)) {
            throw new \InvalidArgumentException("failsoft: the gateway URL must start with http:// or https:// (got '$baseUrl')");
        }
        if ($deadline <= 0 || $connectTimeout <= 0) {
            throw new \InvalidArgumentException('failsoft: deadline and connectTimeout must be more than 0 seconds');
        }
        $this->baseUrl = rtrim($baseUrl, '/');
        $this->transport = $transport ?? new CurlTransport();
        $this->store = $store ?? self::defaultStore();
        $this->idPrefix = 'php-' . bin2hex(random_bytes(4));
    }

    /**
     * One row's answer.
     * @param array<string, mixed> $inputs the row, by input name
     */
    public function predict(string $model, array $inputs, ?string $requestId = null): Prediction
    {
        return $this->call($model, (object) $inputs, $requestId, null);
    }

    /**
     * Several rows in one call; the answer's value is a list, one per row (the default repeated when the
     * client answers).
     * @param list<array<string, mixed>> $rows
     */
    public function predictBatch(string $model, array $rows, ?string $requestId = null): Prediction
    {
        return $this->call($model, array_map(static fn ($row) => (object) $row, array_values($rows)), $requestId,
            count($rows));
    }

    /**
     * Ask the gateway for the model's safe default now and keep it (from a cron job or a deploy hook, so a
     * gateway lost before the model's first answer still leaves its default). Null when it could not.
     * @return array<string, mixed>|null the gateway's document: value, version, tier, age_s...
     */
    public function refreshDefault(string $model, ?float $timeout = null): ?array
    {
        $key = $this->key($model);
        $kept = $this->store->get($key);
        $headers = $this->headers + ['Accept' => 'application/json'];
        if ($kept !== null && $kept['etag'] !== '') {
            $headers['If-None-Match'] = $kept['etag'];
        }
        $timeout ??= $this->deadline;
        try {
            $response = $this->transport->send('GET', $this->url($model, 'default'), $headers, null, $timeout,
                min($this->connectTimeout, $timeout));
        } catch (TransportFailed) {
            return null;
        }
        if ($response->status === 304 && $kept !== null) {
            $this->store->set($key, ['doc' => $kept['doc'], 'etag' => $kept['etag'], 'checked' => microtime(true)]);
            return $kept['doc'];
        }
        $doc = $response->status === 200 ? json_decode($response->body, true) : null;
        if (!is_array($doc) || !array_key_exists('value', $doc)) {
            return null;
        }
        $this->store->set($key, ['doc' => $doc, 'etag' => $response->header('etag') ?? '', 'checked' => microtime(true)]);
        return $doc;
    }

    /** The model's safe default as the client keeps it (the gateway's document), or null. */
    public function keptDefault(string $model): ?array
    {
        return $this->store->get($this->key($model))['doc'] ?? null;
    }

    // ---- inside ---------------------------------------------------------------------------------------

    private function call(string $model, object|array $inputs, ?string $requestId, ?int $rows): Prediction
    {
        $started = microtime(true);
        $id = $requestId ?? $this->idPrefix . '-' . (++$this->calls);
        try {
            $body = json_encode(['inputs' => $inputs, 'id' => $id], JSON_THROW_ON_ERROR | JSON_UNESCAPED_SLASHES
                | JSON_PRESERVE_ZERO_FRACTION | JSON_INVALID_UTF8_SUBSTITUTE);
        } catch (\JsonException $err) {
            return $this->refused(new InvalidRequest("the inputs cannot be sent as JSON: {$err->getMessage()}"),
                $model, $id, $rows, $started);
        }
        $headers = $this->headers + ['Content-Type' => 'application/json', 'Accept' => 'application/json',
            'X-Request-Id' => $id];
        $tries = $this->retryRefused ? 2 : 1;
        while (true) {
            $left = $this->deadline - (microtime(true) - $started);
            try {
                $response = $this->transport->send('POST', $this->url($model, 'predict'), $headers, $body,
                    max($left, 0.001), min($this->connectTimeout, max($left, 0.001)));
                break;
            } catch (TransportFailed $err) {
                $left = $this->deadline - (microtime(true) - $started);
                if (--$tries > 0 && $err->refused && $left > $this->connectTimeout) {
                    usleep(min(50000, (int) ($left * 1e6 / 4)));  // a gateway restarting takes a moment
                    continue;
                }
                return $this->fallback($model, $id, $err->reason, $err->getMessage(), $rows, $started);
            }
        }
        return $this->read($model, $id, $response, $rows, $started);
    }

    private function read(string $model, string $id, Response $response, ?int $rows, float $started): Prediction
    {
        $status = $response->status;
        if ($status >= 500) {
            $said = $this->said($response);
            return $this->fallback($model, $id, Reason::GATEWAY_ERROR,
                "the gateway answered HTTP $status" . ($said !== '' ? ": $said" : ''), $rows, $started);
        }
        if ($status >= 400) {
            return $this->refused($this->error($model, $response), $model, $id, $rows, $started);
        }
        $latency = (microtime(true) - $started) * 1000;
        $doc = $status === 200 ? json_decode($response->body, true) : null;
        $answer = Prediction::fromAnswer($doc, $latency);
        if ($answer === null) {
            $what = $status !== 200 ? "HTTP $status" : ($doc === null ? 'a body that is not JSON' : 'JSON without the answer fields');
            return $this->fallback($model, $id, Reason::BAD_ANSWER, "not a failsoft answer ($what): "
                . substr(trim(strip_tags($response->body)), 0, 120), $rows, $started);
        }
        $this->keepFresh($model, $started);
        return $answer;
    }

    /** A kept default older than refreshSeconds is checked with the gateway (it just answered), within
     * what is left of the deadline; many page views at once check it once. */
    private function keepFresh(string $model, float $started): void
    {
        $key = $this->key($model);
        $kept = $this->store->get($key);
        $now = microtime(true);
        if ($kept !== null && $now - $kept['checked'] < $this->refreshSeconds) {
            return;
        }
        $left = $this->deadline - ($now - $started);
        if ($left < 0.005) {
            return;
        }
        if ($kept !== null) {  // the others see it checked and leave it to this one
            $this->store->set($key, ['doc' => $kept['doc'], 'etag' => $kept['etag'], 'checked' => $now]);
        }
        $this->refreshDefault($model, $left);
    }

    private function refused(InvalidRequest $err, string $model, string $id, ?int $rows, float $started): Prediction
    {
        if ($this->strict) {
            throw $err;
        }
        return $this->fallback($model, $id, Reason::REJECTED, $err->getMessage(), $rows, $started);
    }

    private function error(string $model, Response $response): InvalidRequest
    {
        $said = $this->said($response);
        if ($response->status === 404 && str_starts_with($said, 'unknown model')) {
            $known = explode('serves ', $said, 2)[1] ?? '';
            $known = $known === '' || $known === 'none' ? [] : explode(', ', $known);
            return new UnknownModel($said, $model, $known);
        }
        if ($response->status === 404) {
            return new InvalidRequest("{$this->url($model, 'predict')} answered 404 ($said): the URL must be the "
                . "gateway's root, e.g. http://host:8000", 404);
        }
        return new InvalidRequest("the gateway refused the call (HTTP {$response->status}): $said", $response->status);
    }

    private function said(Response $response): string
    {
        $doc = json_decode($response->body, true);
        if (is_array($doc) && is_string($doc['error'] ?? null)) {
            return $doc['error'];
        }
        return substr(trim(strip_tags($response->body)), 0, 200);
    }

    private function fallback(string $model, string $id, string $reason, string $detail, ?int $rows,
                              float $started): Prediction
    {
        $kept = $this->store->get($this->key($model));
        $version = '';
        if ($kept !== null) {
            [$tier, $value, $version] = ['client-cache', $kept['doc']['value'], (string) ($kept['doc']['version'] ?? '')];
        } elseif (array_key_exists($model, $this->defaults)) {
            [$tier, $value] = ['client-default', $this->defaults[$model]];
        } elseif (array_key_exists('*', $this->defaults)) {
            [$tier, $value] = ['client-default', $this->defaults['*']];
        } elseif ($this->strict) {
            throw new NoDefault("the gateway at {$this->baseUrl} could not answer for '$model' ($detail) and the "
                . "client has no default for it: give defaults: ['$model' => ...]");
        } else {
            [$tier, $value] = ['client-none', null];
            $detail .= "; the client has no default for this model (give defaults: ['$model' => ...])";
        }
        return new Prediction(
            $rows === null ? $value : array_fill(0, $rows, $value), $model, $version, $tier, true, $reason,
            (microtime(true) - $started) * 1000, $id, [], [['gateway', $reason, substr($detail, 0, 300)]],
        );
    }

    private function url(string $model, string $what): string
    {
        return $this->baseUrl . '/v1/models/' . rawurlencode($model) . '/' . $what;
    }

    private function key(string $model): string
    {
        // a model's name may hold what a cache key must not ({}()/\@:)
        return $this->storePrefix . (preg_match('/^[A-Za-z0-9_.-]{1,64}$/', $model) ? $model : hash('sha256', $model));
    }

    /** APCu where it is on, else files in the system's temporary folder, one folder per user. */
    private static function defaultStore(): DefaultStore
    {
        if (ApcuStore::available()) {
            return new ApcuStore();
        }
        $user = function_exists('posix_geteuid') ? (string) posix_geteuid() : get_current_user();
        return new FileStore(sys_get_temp_dir() . '/failsoft-defaults-' . $user);
    }
}
