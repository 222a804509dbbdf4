<?php
declare(strict_types=1);

namespace Failsoft\Exception;

/**
 * The call itself was wrong (the gateway answered 4xx, or the inputs cannot be sent as JSON). Thrown only
 * by a strict client; a client that is not strict answers with its default, reason `rejected`.
 */
class InvalidRequest extends \InvalidArgumentException implements FailsoftException
{
    public function __construct(string $message, public readonly int $status = 0)
    {
        parent::__construct($message);
    }
}
