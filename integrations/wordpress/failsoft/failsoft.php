<?php
/**
 * Plugin Name:       failsoft
 * Plugin URI:        https://github.com/failsoft/failsoft
 * Description:       Model answers (recommendations, scores, fraud checks) from a failsoft gateway, always within a deadline: when the gateway cannot answer, the page gets the gateway's own safe default, kept on the site.
 * Version:           0.1.0
 * Requires at least: 6.0
 * Requires PHP:      8.1
 * Author:            failsoft
 * License:           Apache-2.0
 * License URI:       https://www.apache.org/licenses/LICENSE-2.0
 * Text Domain:       failsoft
 */

defined( 'ABSPATH' ) || exit;

require_once __DIR__ . '/client/autoload.php';
require_once __DIR__ . '/includes/class-failsoft-wp-transport.php';
require_once __DIR__ . '/includes/class-failsoft-wp-store.php';
require_once __DIR__ . '/includes/functions.php';
require_once __DIR__ . '/includes/shortcode.php';
require_once __DIR__ . '/includes/settings.php';

register_activation_hook( __FILE__, 'failsoft_activate' );
register_deactivation_hook( __FILE__, 'failsoft_deactivate' );
add_action( 'failsoft_refresh_defaults', 'failsoft_refresh_defaults' );
add_shortcode( 'failsoft', 'failsoft_shortcode' );
add_action( 'admin_menu', 'failsoft_admin_menu' );
add_action( 'admin_init', 'failsoft_register_settings' );
