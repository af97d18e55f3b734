// The "@type" URLs of the Envoy v3 extensions the converter understands. Filters are identified by
// these, matched exactly: a filter's `name` is only a label in v3, and a near-miss (a v2 URL, an
// unrelated extension with a similar name) must not be mistaken for one we can map.

const PREFIX = 'type.googleapis.com/';

export const TYPE = {
  originalDstListenerFilter: `${PREFIX}envoy.extensions.filters.listener.original_dst.v3.OriginalDst`,
  originalSrcListenerFilter: `${PREFIX}envoy.extensions.filters.listener.original_src.v3.OriginalSrc`,
  tcpProxy: `${PREFIX}envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy`,
  httpConnectionManager: `${PREFIX}envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager`,
  router: `${PREFIX}envoy.extensions.filters.http.router.v3.Router`,
} as const;

/**
 * Extensions whose typed_config is an empty message may be given by their canonical name alone
 * (older configs do); only these, and only by the exact name.
 */
export const NAME_ONLY: Readonly<Record<string, string>> = {
  'envoy.filters.listener.original_dst': TYPE.originalDstListenerFilter,
  'envoy.filters.http.router': TYPE.router,
};

/** A v2 API URL ("envoy.config.filter...v2", "envoy.api.v2..."): the converter reads v3 only. */
export function isV2TypeUrl(url: string): boolean {
  return /^type\.googleapis\.com\/envoy\.(config\.filter|api\.v2)\./.test(url) || /\.v2(alpha)?\.[A-Za-z]+$/.test(url);
}
