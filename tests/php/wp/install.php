<?php
// wp_install into the site's empty database, the plugin activated, its settings, a page with CONTENT.
define('WP_INSTALLING', true);
define('ABSPATH', getenv('SITE') . '/');
$_SERVER['HTTP_HOST'] = getenv('HOST');
require_once ABSPATH . 'wp-load.php';
require_once ABSPATH . 'wp-admin/includes/upgrade.php';
require_once ABSPATH . 'wp-admin/includes/plugin.php';
wp_install('A failsoft shop', 'admin', 'admin@example.com', true, '', 'admin-password', 'en_US');
update_option('permalink_structure', '/%postname%/');
$done = activate_plugin('failsoft/failsoft.php');
if (is_wp_error($done)) { fwrite(STDERR, $done->get_error_message()); exit(1); }
update_option('failsoft_settings', ['url' => getenv('GATEWAY'), 'deadline' => (float) getenv('DEADLINE'),
    'log_interval' => 300]);
$id = wp_insert_post(['post_type' => 'page', 'post_status' => 'publish', 'post_title' => 'Recommended for you',
    'post_name' => 'for-you', 'post_content' => getenv('CONTENT')]);
echo $id, "\n";
