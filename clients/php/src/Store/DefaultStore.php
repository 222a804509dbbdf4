<?php
declare(strict_types=1);

namespace Failsoft\Store;

/**
 * Where the client keeps each model's safe default as the gateway last gave it, between page views.
 * An entry is ['doc' => the gateway's document, 'etag' => its ETag, 'checked' => unix time last checked].
 * A store that fails answers null / keeps nothing; it never throws into a page.
 */
interface DefaultStore
{
    /** @return array{doc: array<string, mixed>, etag: string, checked: float}|null */
    public function get(string $key): ?array;

    /** @param array{doc: array<string, mixed>, etag: string, checked: float} $entry */
    public function set(string $key, array $entry): void;
}
