<?php
declare(strict_types=1);

namespace Failsoft\Transport;

use Failsoft\Exception\TransportFailed;
use Failsoft\Reason;

/**
 * ext-curl, nothing else. One handle is kept for the life of the object, so calls from one PHP process
 * reuse their connection to the gateway (keep-alive), and the timeouts are milliseconds, not seconds.
 */
final class CurlTransport implements Transport
{
    private ?\CurlHandle $handle = null;

    public function send(string $method, string $url, array $headers, ?string $body, float $timeout,
                         float $connectTimeout): Response
    {
        $h = $this->handle ??= curl_init();
        if ($h === false) {
            throw new TransportFailed('curl_init failed');
        }
        curl_reset($h);
        $lines = [];
        foreach ($headers as $name => $value) {
            $lines[] = $name . ': ' . $value;
        }
        $lines[] = 'Expect:';  // never wait for a 100-continue
        $received = [];
        curl_setopt_array($h, [
            CURLOPT_URL => $url,
            CURLOPT_CUSTOMREQUEST => $method,
            CURLOPT_HTTPHEADER => $lines,
            CURLOPT_RETURNTRANSFER => true,
            CURLOPT_NOSIGNAL => true,  // sub-second timeouts without SIGALRM
            CURLOPT_TIMEOUT_MS => max(1, (int) ceil($timeout * 1000)),
            CURLOPT_CONNECTTIMEOUT_MS => max(1, (int) ceil(min($connectTimeout, $timeout) * 1000)),
            CURLOPT_FOLLOWLOCATION => false,
            CURLOPT_PROTOCOLS => CURLPROTO_HTTP | CURLPROTO_HTTPS,
            CURLOPT_ENCODING => '',  // accept what curl can decode (the gateway gzips large answers)
            CURLOPT_HEADERFUNCTION => static function ($ch, string $line) use (&$received): int {
                $parts = explode(':', $line, 2);
                if (count($parts) === 2) {
                    $received[strtolower(trim($parts[0]))] = trim($parts[1]);
                }
                return strlen($line);
            },
        ]);
        if ($body !== null) {
            curl_setopt($h, CURLOPT_POSTFIELDS, $body);
        }
        $content = curl_exec($h);
        if ($content === false || !is_string($content)) {
            $errno = curl_errno($h);
            $said = curl_error($h);
            $connected = curl_getinfo($h, CURLINFO_CONNECT_TIME) > 0;
            curl_close($h);  // a failed exchange leaves nothing worth reusing
            $this->handle = null;
            if ($errno === CURLE_OPERATION_TIMEDOUT && $connected) {
                throw new TransportFailed("no answer within {$this->ms($timeout)} ms", Reason::TIMEOUT);
            }
            if ($errno === CURLE_OPERATION_TIMEDOUT) {
                throw new TransportFailed("no connection within {$this->ms(min($connectTimeout, $timeout))} ms",
                    min($connectTimeout, $timeout) < $timeout ? Reason::UNREACHABLE : Reason::TIMEOUT);
            }
            $refused = $errno === CURLE_COULDNT_CONNECT;  // refused, or no route: nothing listens there now
            throw new TransportFailed($said !== '' ? $said : "curl error $errno", Reason::UNREACHABLE, $refused);
        }
        return new Response((int) curl_getinfo($h, CURLINFO_RESPONSE_CODE), $received, $content);
    }

    private function ms(float $seconds): string
    {
        return (string) round($seconds * 1000);
    }
}
