<?php
declare(strict_types=1);

namespace Failsoft;

/**
 * One answer and where it came from. `tier` is the gateway's tier that answered, or the client's own:
 * `client-cache` (the gateway's safe default as the client last saw it), `client-default` (a default given
 * in code) or `client-none` (no default at all: `value` is null).
 */
final class Prediction
{
    /**
     * @param list<string> $warnings what in the request the gateway did not use
     * @param list<array{0: string, 1: string, 2: string}> $skips every tier passed by: [tier, reason, detail]
     */
    public function __construct(
        public readonly mixed $value,
        public readonly string $model,
        public readonly string $version,
        public readonly string $tier,
        public readonly bool $degraded,
        public readonly ?string $reason,
        public readonly float $latencyMs,
        public readonly string $requestId,
        public readonly array $warnings = [],
        public readonly array $skips = [],
    ) {
    }

    /** Whether the gateway gave this answer (possibly from one of its own fallback tiers). */
    public function fromGateway(): bool
    {
        return !str_starts_with($this->tier, 'client-');
    }

    /** What the first passed-by tier said (the gateway's words for a client answer), or ''. */
    public function detail(): string
    {
        return $this->skips[0][2] ?? '';
    }

    /**
     * The answer as the gateway's JSON has it (for a log line or a comparison).
     * @return array<string, mixed>
     */
    public function toArray(): array
    {
        return [
            'id' => $this->requestId, 'model' => $this->model, 'version' => $this->version,
            'tier' => $this->tier, 'degraded' => $this->degraded, 'reason' => $this->reason,
            'outputs' => $this->value, 'latency_ms' => $this->latencyMs, 'skips' => $this->skips,
            'warnings' => $this->warnings,
        ];
    }

    /**
     * A gateway's answer, or null when the document is not one.
     * @param mixed $doc the decoded body
     */
    public static function fromAnswer(mixed $doc, float $latencyMs): ?self
    {
        if (!is_array($doc) || !array_key_exists('outputs', $doc)) {
            return null;
        }
        foreach (['id' => 'is_string', 'model' => 'is_string', 'version' => 'is_string', 'tier' => 'is_string',
                  'degraded' => 'is_bool'] as $key => $is) {
            if (!isset($doc[$key]) || !$is($doc[$key])) {
                return null;
            }
        }
        $reason = $doc['reason'] ?? null;
        $warnings = $doc['warnings'] ?? [];
        $skips = $doc['skips'] ?? [];
        if (($reason !== null && !is_string($reason)) || !is_array($warnings) || !is_array($skips)) {
            return null;
        }
        return new self(
            $doc['outputs'], $doc['model'], $doc['version'], $doc['tier'], $doc['degraded'], $reason,
            // the gateway's own measure of its time, when it gives one; the client's otherwise
            is_int($doc['latency_ms'] ?? null) || is_float($doc['latency_ms'] ?? null)
                ? (float) $doc['latency_ms'] : $latencyMs,
            $doc['id'], array_values(array_map('strval', $warnings)), array_values($skips),
        );
    }
}
