<?php
// php -S: the site's own files (links into Debian's WordPress), its wp-config.php, pretty links to index.php
define('ABSPATH', __DIR__ . '/');
$path = urldecode(parse_url($_SERVER['REQUEST_URI'], PHP_URL_PATH) ?? '/');
$file = __DIR__ . $path;
if (is_dir($file)) {
    $file = rtrim($file, '/') . '/index.php';
}
if (is_file($file) && !str_ends_with($file, '.php')) {
    return false;
}
if (!is_file($file)) {
    $file = __DIR__ . '/index.php';
}
$_SERVER['SCRIPT_FILENAME'] = $file;
$_SERVER['SCRIPT_NAME'] = $_SERVER['PHP_SELF'] = substr($file, strlen(__DIR__));
chdir(dirname($file));
require $file;
