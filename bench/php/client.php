<?php
// The PHP client against a bare curl call to the same gateway, alternating call by call in one process,
// then the time to the kept default with the gateway refusing connections and hung. Prints one JSON object.
//   php bench/php/client.php GATEWAY_URL REFUSED_URL HUNG_URL N
declare(strict_types=1);

require __DIR__ . '/../../clients/php/autoload.php';

use Failsoft\Client;
use Failsoft\Store\FileStore;

[, $gateway, $refused, $hung, $n] = $argv;
$n = (int) $n;
$row = ['user_id' => 7];
$dir = sys_get_temp_dir() . '/failsoft-bench-' . getmypid();

function p(array $xs, float $q): float
{
    sort($xs);
    return round($xs[(int) floor($q * (count($xs) - 1))], 3);
}

// bare: what a hand-written call does at least (one reused handle, a JSON body, the answer decoded)
$h = curl_init();
curl_setopt_array($h, [CURLOPT_URL => "$gateway/v1/models/recs/predict", CURLOPT_POST => true,
    CURLOPT_RETURNTRANSFER => true, CURLOPT_HTTPHEADER => ['Content-Type: application/json', 'Expect:'],
    CURLOPT_TIMEOUT_MS => 2000, CURLOPT_CONNECTTIMEOUT_MS => 250, CURLOPT_NOSIGNAL => true]);
$bare = static function () use ($h, $row): array {
    curl_setopt($h, CURLOPT_POSTFIELDS, json_encode(['inputs' => $row]));
    return json_decode((string) curl_exec($h), true);
};
$client = new Client($gateway, store: new FileStore($dir));
$ours = static fn () => $client->predict('recs', $row);

for ($i = 0; $i < 200; $i++) {  // warm both: connections, the kept default, opcache-less PHP's first calls
    $bare();
    $ours();
}
$tb = $tc = [];
for ($i = 0; $i < $n; $i++) {
    $t = hrtime(true);
    $bare();
    $tb[] = (hrtime(true) - $t) / 1e6;
    $t = hrtime(true);
    $ours();
    $tc[] = (hrtime(true) - $t) / 1e6;
}
$out = ['calls' => $n, 'bare_curl_p50_ms' => p($tb, 0.5), 'client_p50_ms' => p($tc, 0.5),
    'added_p50_ms' => round(p($tc, 0.5) - p($tb, 0.5), 3), 'bare_curl_p99_ms' => p($tb, 0.99),
    'client_p99_ms' => p($tc, 0.99)];

// the gateway gone: a new client per page view, the default kept in files by the one above
foreach (['refused' => [$refused, 2.0, 200], 'hung' => [$hung, 0.2, 10]] as $what => [$url, $deadline, $m]) {
    $ts = [];
    for ($i = 0; $i < $m; $i++) {
        $t = hrtime(true);
        $p = (new Client($url, deadline: $deadline, store: new FileStore($dir)))->predict('recs', $row);
        $ts[] = (hrtime(true) - $t) / 1e6;
        if ($p->tier !== 'client-cache') {
            fwrite(STDERR, "expected the kept default, got {$p->tier}: {$p->detail()}\n");
            exit(1);
        }
    }
    $out["{$what}_deadline_ms"] = $deadline * 1000;
    $out["{$what}_p50_ms"] = p($ts, 0.5);
    $out["{$what}_max_ms"] = round(max($ts), 3);
    $out["{$what}_reason"] = $p->reason;
}
foreach (glob("$dir/*") ?: [] as $f) {
    unlink($f);
}
@rmdir($dir);
echo json_encode($out), "\n";
