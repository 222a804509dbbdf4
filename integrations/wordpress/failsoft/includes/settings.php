<?php
/**
 * Settings > failsoft: the gateway's URL, a token where the gateway needs one, the deadline, the log
 * interval. A constant in wp-config.php fixes a setting (the field then shows it, read-only). The page
 * also says whether the gateway answers and which safe defaults the site keeps.
 */

defined( 'ABSPATH' ) || exit;

function failsoft_admin_menu(): void {
	add_options_page( 'failsoft', 'failsoft', 'manage_options', 'failsoft', 'failsoft_settings_page' );
}

function failsoft_register_settings(): void {
	register_setting(
		'failsoft',
		FAILSOFT_OPTION,
		array(
			'type'              => 'array',
			'sanitize_callback' => 'failsoft_sanitize_settings',
			'default'           => array(),
		)
	);
}

/**
 * @param mixed $input
 * @return array<string, mixed>
 */
function failsoft_sanitize_settings( $input ): array {
	$input = is_array( $input ) ? $input : array();
	$url   = esc_url_raw( trim( (string) ( $input['url'] ?? '' ) ), array( 'http', 'https' ) );
	if ( '' === $url ) {
		add_settings_error( FAILSOFT_OPTION, 'url', __( 'The gateway URL must be an http:// or https:// address, e.g. http://failsoft:8000.', 'failsoft' ) );
		$url = failsoft_settings()['url'];
	}
	$deadline = (float) ( $input['deadline'] ?? FAILSOFT_DEFAULT_TIMEOUT );
	if ( $deadline < 0.05 || $deadline > 10 ) {
		add_settings_error( FAILSOFT_OPTION, 'deadline', __( 'The deadline is in seconds, from 0.05 to 10.', 'failsoft' ) );
		$deadline = min( 10.0, max( 0.05, $deadline ) );
	}
	return array(
		'url'          => $url,
		'token'        => sanitize_text_field( (string) ( $input['token'] ?? '' ) ),
		'deadline'     => $deadline,
		'log_interval' => max( 10, (int) ( $input['log_interval'] ?? 300 ) ),
	);
}

function failsoft_settings_page(): void {
	if ( ! current_user_can( 'manage_options' ) ) {
		return;
	}
	$s     = failsoft_settings();
	$field = static function ( string $key, string $label, string $type, string $help ) use ( $s ): void {
		$fixed = in_array( $key, $s['fixed'], true );
		printf(
			'<tr><th scope="row"><label for="failsoft-%1$s">%2$s</label></th><td><input id="failsoft-%1$s" name="%3$s[%1$s]" type="%4$s" value="%5$s" class="regular-text" %6$s step="any"><p class="description">%7$s</p></td></tr>',
			esc_attr( $key ),
			esc_html( $label ),
			esc_attr( FAILSOFT_OPTION ),
			esc_attr( $type ),
			esc_attr( 'token' === $key && '' !== $s[ $key ] ? $s[ $key ] : (string) $s[ $key ] ),
			$fixed ? 'readonly' : '',
			esc_html( $fixed ? sprintf( __( 'Set in wp-config.php (FAILSOFT_%s).', 'failsoft' ), strtoupper( $key ) ) : $help )
		);
	};
	echo '<div class="wrap"><h1>failsoft</h1><form method="post" action="options.php">';
	settings_fields( 'failsoft' );
	echo '<table class="form-table" role="presentation">';
	$field( 'url', __( 'Gateway URL', 'failsoft' ), 'url', __( "The gateway's root, e.g. http://failsoft:8000.", 'failsoft' ) );
	$field( 'token', __( 'Token', 'failsoft' ), 'password', __( 'Sent as a bearer token, when the gateway sits behind a proxy that wants one.', 'failsoft' ) );
	$field( 'deadline', __( 'Deadline (seconds)', 'failsoft' ), 'number', __( "A page waits at most this long for a model; then it gets the gateway's safe default kept on the site.", 'failsoft' ) );
	$field( 'log_interval', __( 'Log interval (seconds)', 'failsoft' ), 'number', __( 'While the gateway fails, one line in the PHP error log per interval.', 'failsoft' ) );
	echo '</table>';
	submit_button();
	echo '</form><h2>' . esc_html__( 'Safe defaults kept on this site', 'failsoft' ) . '</h2><table class="widefat striped"><thead><tr><th>Model</th><th>Version</th><th>Default</th><th>Checked</th></tr></thead><tbody>';
	$models = get_option( FAILSOFT_MODELS_OPTION, array() );
	foreach ( is_array( $models ) ? $models : array() as $model ) {
		$kept = ( new Failsoft_WP_Store() )->get( 'failsoft_default_' . $model );
		printf(
			'<tr><td>%s</td><td>%s</td><td><code>%s</code></td><td>%s</td></tr>',
			esc_html( (string) $model ),
			esc_html( (string) ( $kept['doc']['version'] ?? '' ) ),
			esc_html( null === $kept ? __( 'none yet: the gateway has not answered for it', 'failsoft' ) : substr( (string) wp_json_encode( $kept['doc']['value'] ), 0, 200 ) ),
			esc_html( null === $kept ? '' : human_time_diff( (int) $kept['checked'] ) . ' ago' )
		);
	}
	echo '</tbody></table></div>';
}
