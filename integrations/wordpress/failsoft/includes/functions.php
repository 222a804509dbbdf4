<?php
/**
 * failsoft_predict() and what it stands on: the settings (wp-config.php constants over the settings
 * page), one client per page view, the failure log line once per interval, the hourly refresh.
 */

defined( 'ABSPATH' ) || exit;

use Failsoft\Client;
use Failsoft\Prediction;

const FAILSOFT_OPTION          = 'failsoft_settings';
const FAILSOFT_MODELS_OPTION   = 'failsoft_models';
const FAILSOFT_QUIET_OPTION    = 'failsoft_quiet_until';
const FAILSOFT_DEFAULT_URL     = 'http://127.0.0.1:8000';
const FAILSOFT_DEFAULT_TIMEOUT = 1.0;

/**
 * The settings in force: a constant in wp-config.php (FAILSOFT_URL, FAILSOFT_TOKEN, FAILSOFT_DEADLINE,
 * FAILSOFT_LOG_INTERVAL) wins over the settings page.
 *
 * @return array{url: string, token: string, deadline: float, log_interval: int, fixed: list<string>}
 */
function failsoft_settings(): array {
	$saved = get_option( FAILSOFT_OPTION, array() );
	$saved = is_array( $saved ) ? $saved : array();
	$out   = array(
		'url'          => (string) ( $saved['url'] ?? FAILSOFT_DEFAULT_URL ),
		'token'        => (string) ( $saved['token'] ?? '' ),
		'deadline'     => (float) ( $saved['deadline'] ?? FAILSOFT_DEFAULT_TIMEOUT ),
		'log_interval' => (int) ( $saved['log_interval'] ?? 300 ),
		'fixed'        => array(),
	);
	foreach ( array( 'url' => 'FAILSOFT_URL', 'token' => 'FAILSOFT_TOKEN', 'deadline' => 'FAILSOFT_DEADLINE', 'log_interval' => 'FAILSOFT_LOG_INTERVAL' ) as $key => $constant ) {
		if ( defined( $constant ) ) {
			$out[ $key ]     = constant( $constant );
			$out['fixed'][] = $key;
		}
	}
	$out['url']          = (string) $out['url'];
	$out['token']        = (string) $out['token'];
	$out['deadline']     = min( 10.0, max( 0.05, (float) $out['deadline'] ) );
	$out['log_interval'] = max( 10, (int) $out['log_interval'] );
	return $out;
}

/** One client for the page view (it keeps its connection to the gateway between calls). */
function failsoft_client(): Client {
	static $client = null, $made_for = null;
	$s   = failsoft_settings();
	$for = array( $s['url'], $s['token'], $s['deadline'] );
	if ( null === $client || $made_for !== $for ) {
		$client   = new Client(
			$s['url'],
			deadline: $s['deadline'],
			connectTimeout: min( 0.25, $s['deadline'] / 2 ),
			store: new Failsoft_WP_Store(),
			transport: new Failsoft_WP_Transport(),
			headers: '' !== $s['token'] ? array( 'Authorization' => 'Bearer ' . $s['token'] ) : array(),
		);
		$made_for = $for;
	}
	return $client;
}

/**
 * A model's answer for one row of inputs, within the deadline, never an error: from the gateway, else the
 * gateway's safe default as the site last saw it. $prediction->value is the answer; ->tier, ->degraded and
 * ->reason say where it came from.
 *
 * @param array<string, mixed> $inputs the row, by input name
 */
function failsoft_predict( string $model, array $inputs ): Prediction {
	try {
		$prediction = failsoft_client()->predict( $model, $inputs );
	} catch ( \Throwable $err ) {  // a broken setting (a URL that is not one): still an answer
		$prediction = new Prediction( null, $model, '', 'client-none', true, 'rejected', 0.0, '', array(), array( array( 'gateway', 'rejected', $err->getMessage() ) ) );
	}
	failsoft_remember_model( $model );
	if ( ! $prediction->fromGateway() ) {
		failsoft_log_failure( $prediction );
		/**
		 * The answer the page gets when the gateway could not give one (by default the gateway's own safe
		 * default as the site kept it, else null).
		 *
		 * @param mixed      $value      the client's answer
		 * @param string     $model      the model
		 * @param Prediction $prediction all of it: ->reason, ->detail()
		 */
		$value = apply_filters( 'failsoft_fallback', $prediction->value, $model, $prediction );
		if ( $value !== $prediction->value ) {
			$prediction = new Prediction( $value, $prediction->model, $prediction->version, $prediction->tier, true, $prediction->reason, $prediction->latencyMs, $prediction->requestId, $prediction->warnings, $prediction->skips );
		}
	}
	if ( $prediction->degraded ) {
		/**
		 * Every degraded answer, from the gateway's fallback tiers or the site's kept default: count it,
		 * tag the page, or change it.
		 *
		 * @param Prediction $prediction
		 */
		$prediction = apply_filters( 'failsoft_degraded', $prediction );
	}
	return $prediction;
}

/**
 * One line in the PHP error log per interval while the gateway fails, not one per page view. The claim
 * is one UPDATE of one row, so of many page views at once only one writes the line.
 */
function failsoft_log_failure( Prediction $p ): void {
	global $wpdb;
	$now      = time();
	$interval = failsoft_settings()['log_interval'];
	add_option( FAILSOFT_QUIET_OPTION, '0', '', false );  // once; does nothing when it is there
	$claimed = $wpdb->query(
		$wpdb->prepare(
			"UPDATE {$wpdb->options} SET option_value = %s WHERE option_name = %s AND CAST(option_value AS UNSIGNED) <= %d",
			(string) ( $now + $interval ),
			FAILSOFT_QUIET_OPTION,
			$now
		)
	);
	wp_cache_delete( FAILSOFT_QUIET_OPTION, 'options' );
	if ( 1 !== $claimed ) {
		return;
	}
	error_log(
		sprintf(
			'failsoft: the gateway did not answer for %s (%s: %s); the page got %s. The next line in %d s at the earliest.',
			$p->model,
			$p->reason,
			$p->detail(),
			'client-cache' === $p->tier ? "the gateway's safe default kept on the site (version {$p->version})" : ( 'client-none' === $p->tier ? 'no answer: the site has no default for it yet' : 'the default given in code' ),
			$interval
		)
	);
}

/** The models the site asks for, for the hourly refresh of their defaults. */
function failsoft_remember_model( string $model ): void {
	$models = get_option( FAILSOFT_MODELS_OPTION, array() );
	$models = is_array( $models ) ? $models : array();
	if ( ! in_array( $model, $models, true ) && count( $models ) < 100 ) {
		$models[] = $model;
		update_option( FAILSOFT_MODELS_OPTION, $models, false );
	}
}

/** Hourly (wp-cron): each model's safe default fetched again, so a long quiet spell leaves it fresh. */
function failsoft_refresh_defaults(): void {
	$models = get_option( FAILSOFT_MODELS_OPTION, array() );
	foreach ( is_array( $models ) ? $models : array() as $model ) {
		failsoft_client()->refreshDefault( (string) $model );
	}
}

function failsoft_activate(): void {
	add_option( FAILSOFT_QUIET_OPTION, '0', '', false );
	if ( ! wp_next_scheduled( 'failsoft_refresh_defaults' ) ) {
		wp_schedule_event( time() + 60, 'hourly', 'failsoft_refresh_defaults' );
	}
}

function failsoft_deactivate(): void {
	wp_clear_scheduled_hook( 'failsoft_refresh_defaults' );
}
