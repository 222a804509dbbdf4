<?php
/**
 * The PHP client's transport through the WordPress HTTP API (wp_remote_request), so that a site's proxy
 * settings, filters and HTTP logging apply. WordPress rounds a timeout up to a whole second and waits up
 * to 10 s for a connection; this transport sets the client's millisecond budgets on the request's curl
 * handle (the http_api_curl action), so a dead gateway costs the connect timeout, not seconds.
 */

defined( 'ABSPATH' ) || exit;

use Failsoft\Exception\TransportFailed;
use Failsoft\Reason;
use Failsoft\Transport\Response;
use Failsoft\Transport\Transport;

final class Failsoft_WP_Transport implements Transport {

	public function send( string $method, string $url, array $headers, ?string $body, float $timeout, float $connect_timeout ): Response {
		$args = array(
			'method'      => $method,
			'headers'     => $headers,
			'body'        => $body,
			'timeout'     => $timeout,
			'redirection' => 0,
			'httpversion' => '1.1',
		);
		/**
		 * The arguments of the call to the gateway (wp_remote_request's), e.g. to add a header.
		 *
		 * @param array  $args the request's arguments
		 * @param string $url  the gateway URL called
		 */
		$args   = apply_filters( 'failsoft_request_args', $args, $url );
		$budget = static function ( $handle ) use ( $timeout, $connect_timeout ) {
			if ( $handle instanceof CurlHandle ) {
				curl_setopt( $handle, CURLOPT_NOSIGNAL, true );
				curl_setopt( $handle, CURLOPT_TIMEOUT_MS, max( 1, (int) ceil( $timeout * 1000 ) ) );
				curl_setopt( $handle, CURLOPT_CONNECTTIMEOUT_MS, max( 1, (int) ceil( min( $connect_timeout, $timeout ) * 1000 ) ) );
			}
		};
		add_action( 'http_api_curl', $budget );
		try {
			$response = wp_remote_request( $url, $args );
		} finally {
			remove_action( 'http_api_curl', $budget );
		}
		if ( is_wp_error( $response ) ) {
			$said = $response->get_error_message();
			if ( preg_match( '/cURL error 28: Operation timed out/i', $said ) ) {
				throw new TransportFailed( $said, Reason::TIMEOUT );
			}
			throw new TransportFailed( $said, Reason::UNREACHABLE, str_contains( $said, 'cURL error 7:' ) );
		}
		$received = array();
		foreach ( wp_remote_retrieve_headers( $response ) as $name => $value ) {
			$received[ strtolower( (string) $name ) ] = is_array( $value ) ? implode( ', ', $value ) : (string) $value;
		}
		return new Response( (int) wp_remote_retrieve_response_code( $response ), $received, (string) wp_remote_retrieve_body( $response ) );
	}
}
