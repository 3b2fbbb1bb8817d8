//! Where tokens come from (given, minted from api_key/api_secret, fetched from a token endpoint)
//! and the cache that keeps every refreshed token.
