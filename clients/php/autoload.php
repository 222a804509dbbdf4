<?php
// The library without Composer (a WordPress plugin, a script): require this file once.
declare(strict_types=1);

spl_autoload_register(static function (string $class): void {
    if (strncmp($class, 'Failsoft\\', 9) !== 0 || strncmp($class, 'Failsoft\\Tests\\', 15) === 0) {
        return;
    }
    $file = __DIR__ . '/src/' . str_replace('\\', '/', substr($class, 9)) . '.php';
    if (is_file($file)) {
        require $file;
    }
});
