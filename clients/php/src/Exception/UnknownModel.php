<?php
declare(strict_types=1);

namespace Failsoft\Exception;

/** The gateway does not serve this model; `known` lists those it does. */
final class UnknownModel extends InvalidRequest
{
    /** @param list<string> $known */
    public function __construct(string $message, public readonly string $model, public readonly array $known)
    {
        parent::__construct($message, 404);
    }
}
