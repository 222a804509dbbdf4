<?php
declare(strict_types=1);

namespace Failsoft\Exception;

/** Every exception the client throws on purpose. */
interface FailsoftException extends \Throwable
{
}
