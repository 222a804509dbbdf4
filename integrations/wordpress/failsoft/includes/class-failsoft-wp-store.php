<?php
/**
 * Where the plugin keeps each model's safe default: a transient (fast, in the object cache where the site
 * has one) and a non-autoloaded option (transients may vanish at any moment; the option does not, and
 * costs nothing on page views that do not need it).
 */

defined( 'ABSPATH' ) || exit;

use Failsoft\Store\DefaultStore;
use Failsoft\Store\Entry;

final class Failsoft_WP_Store implements DefaultStore {

	public function get( string $key ): ?array {
		$entry = Entry::check( get_transient( $key ) );
		if ( null === $entry ) {
			$entry = Entry::check( get_option( $key, null ) );
			if ( null !== $entry ) {
				set_transient( $key, $entry, DAY_IN_SECONDS );
			}
		}
		return $entry;
	}

	public function set( string $key, array $entry ): void {
		set_transient( $key, $entry, DAY_IN_SECONDS );
		$kept = Entry::check( get_option( $key, null ) );
		// the option is written when the default changes, and at most once an hour for its time checked
		if ( null === $kept || $kept['etag'] !== $entry['etag'] || $kept['doc'] !== $entry['doc'] || $entry['checked'] - $kept['checked'] > HOUR_IN_SECONDS ) {
			update_option( $key, $entry, false );
		}
	}
}
