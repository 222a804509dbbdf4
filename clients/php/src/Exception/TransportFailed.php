<?php
declare(strict_types=1);

namespace Failsoft\Exception;

use Failsoft\Reason;

/**
 * A transport could not bring an answer: `reason` is Reason::UNREACHABLE or Reason::TIMEOUT, `refused`
 * whether the connection was refused (the one case a retry may help). The client turns it into a
 * degraded answer; a transport of your own throws it.
 */
final class TransportFailed extends \RuntimeException implements FailsoftException
{
    public function __construct(string $message, public readonly string $reason = Reason::UNREACHABLE,
                                public readonly bool $refused = false)
    {
        parent::__construct($message);
    }
}
