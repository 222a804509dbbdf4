<?php
declare(strict_types=1);

namespace Failsoft;

/**
 * Why an answer is degraded. The gateway's own reasons (why it passed a tier by) come back as it said
 * them; the client's reasons say why it answered itself, the same names as Python's failsoft.Client.
 */
final class Reason
{
    // the client's own
    public const UNREACHABLE = 'unreachable';     // refused, no route, no connection within the connect timeout
    public const TIMEOUT = 'timeout';             // no whole answer within the deadline
    public const GATEWAY_ERROR = 'gateway_error'; // the gateway answered 5xx
    public const BAD_ANSWER = 'bad_answer';       // an answer that is not a failsoft answer
    public const REJECTED = 'rejected';           // a 4xx: the call itself was wrong (unknown model, bad inputs)

    // the gateway's, as they appear in a degraded answer it gave
    public const ERROR = 'error';
    public const CIRCUIT_OPEN = 'circuit_open';
    public const OVERLOADED = 'overloaded';
    public const INVALID_INPUT = 'invalid_input';
    public const INVALID_OUTPUT = 'invalid_output';
    public const QUARANTINED = 'quarantined';
    public const STALE_FEATURES = 'stale_features';

    private function __construct()
    {
    }
}
