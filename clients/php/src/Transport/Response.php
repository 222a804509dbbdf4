<?php
declare(strict_types=1);

namespace Failsoft\Transport;

/** An HTTP answer as the client reads it: status, headers by lower-case name, body. */
final class Response
{
    /** @param array<string, string> $headers */
    public function __construct(public readonly int $status, public readonly array $headers,
                                public readonly string $body)
    {
    }

    public function header(string $name): ?string
    {
        return $this->headers[strtolower($name)] ?? null;
    }
}
