<?php
declare(strict_types=1);

namespace Failsoft\Exception;

/**
 * The gateway could not answer and a strict client has no default for the model: neither the gateway's
 * (never seen yet) nor one given in code. A client that is not strict answers null, tier `client-none`.
 */
final class NoDefault extends \RuntimeException implements FailsoftException
{
}
