<?php
/**
 * [failsoft model="recs" user_id="current" limit="10" title="Picked for you"]: a model's list answer as
 * a list. Every attribute other than model, limit, title and class is an input of the model ("current"
 * is the signed-in user's id; numbers are sent as numbers). A degraded answer is rendered the same way;
 * data-failsoft-tier, -reason and -ms say where it came from and how long it took.
 */

defined( 'ABSPATH' ) || exit;

/**
 * @param array<string, string>|string $atts
 */
function failsoft_shortcode( $atts ): string {
	$atts  = is_array( $atts ) ? $atts : array();
	$model = sanitize_key( $atts['model'] ?? '' );
	if ( '' === $model ) {
		return current_user_can( 'edit_posts' ) ? '<!-- failsoft: the shortcode needs model="..." -->' : '';
	}
	$limit  = max( 1, min( 100, (int) ( $atts['limit'] ?? 10 ) ) );
	$inputs = array();
	foreach ( $atts as $name => $value ) {
		if ( in_array( $name, array( 'model', 'limit', 'title', 'class' ), true ) || ! is_string( $name ) ) {
			continue;
		}
		if ( 'current' === $value && str_ends_with( $name, 'user_id' ) ) {
			$inputs[ $name ] = get_current_user_id();
		} elseif ( is_numeric( $value ) ) {
			$inputs[ $name ] = $value + 0;
		} else {
			$inputs[ $name ] = $value;
		}
	}
	$p     = failsoft_predict( $model, $inputs );
	$items = is_array( $p->value ) ? array_slice( array_values( $p->value ), 0, $limit ) : ( null === $p->value ? array() : array( $p->value ) );
	$html  = '';
	foreach ( $items as $item ) {
		if ( is_array( $item ) && isset( $item['url'], $item['title'] ) ) {
			$inner = sprintf( '<a href="%s">%s</a>', esc_url( (string) $item['url'] ), esc_html( (string) $item['title'] ) );
		} else {
			$inner = esc_html( is_scalar( $item ) ? (string) $item : wp_json_encode( $item ) );
		}
		/**
		 * One item's HTML inside its <li> (e.g. a WooCommerce product card for a product id).
		 *
		 * @param string $inner the escaped default rendering
		 * @param mixed  $item  the item as the model gave it
		 * @param string $model the model
		 */
		$html .= '<li class="failsoft-item">' . apply_filters( 'failsoft_item_html', $inner, $item, $model ) . '</li>';
	}
	$title = isset( $atts['title'] ) ? '<h3 class="failsoft-title">' . esc_html( $atts['title'] ) . '</h3>' : '';
	$class = 'failsoft-list failsoft-model-' . $model . ( isset( $atts['class'] ) ? ' ' . sanitize_html_class( $atts['class'] ) : '' );
	return sprintf(
		'<div class="%s" data-failsoft-model="%s" data-failsoft-tier="%s" data-failsoft-degraded="%s" data-failsoft-reason="%s" data-failsoft-ms="%s">%s<ul>%s</ul></div>',
		esc_attr( $class ),
		esc_attr( $model ),
		esc_attr( $p->tier ),
		$p->degraded ? 'true' : 'false',
		esc_attr( (string) $p->reason ),
		esc_attr( (string) round( $p->latencyMs, 1 ) ),
		$title,
		$html
	);
}
