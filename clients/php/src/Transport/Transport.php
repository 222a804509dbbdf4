<?php
declare(strict_types=1);

namespace Failsoft\Transport;

use Failsoft\Exception\TransportFailed;

/** How the client sends one HTTP request. The curl transport is the default; bring a PSR-18 client with
 * Psr18Transport, or write your own (the WordPress plugin sends through the WordPress HTTP API). */
interface Transport
{
    /**
     * @param array<string, string> $headers
     * @param float $timeout seconds for the whole exchange (never more than what is left of the deadline)
     * @param float $connectTimeout seconds for the connection alone
     * @throws TransportFailed when no HTTP answer came (refused, unreachable, timed out)
     */
    public function send(string $method, string $url, array $headers, ?string $body, float $timeout,
                         float $connectTimeout): Response;
}
