<?php
// The library's own autoloader, the test helpers, and (for the PSR-16 and PSR-18 tests) Composer's
// autoloader where there is one, else the PSR, Nyholm and Guzzle packages from the distribution.
declare(strict_types=1);

error_reporting(E_ALL);
require __DIR__ . '/../autoload.php';
spl_autoload_register(static function (string $class): void {
    if (str_starts_with($class, 'Failsoft\\Tests\\')) {
        $file = __DIR__ . '/' . str_replace('\\', '/', substr($class, 15)) . '.php';
        if (is_file($file)) {
            require $file;
        }
    }
});
if (is_file(__DIR__ . '/../vendor/autoload.php')) {
    require __DIR__ . '/../vendor/autoload.php';
} else {
    foreach (['Psr/SimpleCache/autoload.php', 'Nyholm/Psr7/autoload.php', 'GuzzleHttp/autoload.php'] as $lib) {
        if (stream_resolve_include_path($lib) !== false) {
            require_once $lib;
        }
    }
}
