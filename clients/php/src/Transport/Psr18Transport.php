<?php
declare(strict_types=1);

namespace Failsoft\Transport;

use Failsoft\Exception\TransportFailed;
use Failsoft\Reason;
use Psr\Http\Client\ClientExceptionInterface;
use Psr\Http\Client\ClientInterface;
use Psr\Http\Client\NetworkExceptionInterface;
use Psr\Http\Message\RequestFactoryInterface;
use Psr\Http\Message\StreamFactoryInterface;

/**
 * Any PSR-18 client (Guzzle, Symfony's, ...) with PSR-17 factories. PSR-18 has no timeouts: configure
 * them on your client (Guzzle: `timeout` and `connect_timeout`) no longer than the failsoft client's
 * deadline. An exception past the deadline is reported as a timeout.
 */
final class Psr18Transport implements Transport
{
    public function __construct(
        private readonly ClientInterface $client,
        private readonly RequestFactoryInterface $requests,
        private readonly StreamFactoryInterface $streams,
    ) {
    }

    public function send(string $method, string $url, array $headers, ?string $body, float $timeout,
                         float $connectTimeout): Response
    {
        $request = $this->requests->createRequest($method, $url);
        foreach ($headers as $name => $value) {
            $request = $request->withHeader($name, $value);
        }
        if ($body !== null) {
            $request = $request->withBody($this->streams->createStream($body));
        }
        $started = microtime(true);
        try {
            $response = $this->client->sendRequest($request);
        } catch (ClientExceptionInterface $err) {
            $late = microtime(true) - $started >= $timeout;
            $said = $err->getMessage();
            throw new TransportFailed(
                $late ? 'no answer within ' . round($timeout * 1000) . " ms ($said)" : $said,
                $late ? Reason::TIMEOUT : Reason::UNREACHABLE,
                $err instanceof NetworkExceptionInterface && stripos($said, 'refused') !== false,
            );
        }
        $received = [];
        foreach ($response->getHeaders() as $name => $values) {
            $received[strtolower((string) $name)] = implode(', ', $values);
        }
        return new Response($response->getStatusCode(), $received, (string) $response->getBody());
    }
}
