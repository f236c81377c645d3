//! Bounds on what one request may ask for, so no input can size an allocation,
//! a loop or a compiled regex beyond what the operator allows. The server's
//! settings override the defaults (README, "Server settings"); the embedded API
//! applies them too.

/// Per-request bounds. Violations are refused before anything changes.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Embedding dimension (the largest common models use 4,096).
    pub max_dimension: usize,
    /// HNSW `max_neighbors` (`hnsw:M`): it sizes every node's link lists.
    pub max_hnsw_neighbors: usize,
    /// HNSW `ef_construction` / `ef_search`: they size every search's queues.
    pub max_hnsw_ef: usize,
    /// Results per query (`n_results`, a search's `limit`).
    pub max_n_results: usize,
    /// Query embeddings in one query request.
    pub max_query_embeddings: usize,
    /// Ids in one get or delete.
    pub max_ids: usize,
    /// Searches in one search request.
    pub max_searches: usize,
    pub filter: FilterLimits,
}

/// Bounds on one `where` / `where_document` filter.
#[derive(Debug, Clone, PartialEq)]
pub struct FilterLimits {
    /// Values in one `$in` / `$nin` list.
    pub max_values: usize,
    /// Conditions in the whole filter (each `$and`/`$or` part, field condition
    /// and document condition counts one).
    pub max_conditions: usize,
    /// `$regex` / `$not_regex` conditions in one filter.
    pub max_regexes: usize,
    /// Compiled size of one regular expression, in bytes.
    pub max_regex_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_dimension: 16_384,
            max_hnsw_neighbors: 512,
            max_hnsw_ef: 10_000,
            max_n_results: 100_000,
            max_query_embeddings: 10_000,
            max_ids: 100_000,
            max_searches: 100,
            filter: FilterLimits::default(),
        }
    }
}

impl Default for FilterLimits {
    fn default() -> Self {
        FilterLimits {
            max_values: 10_000,
            max_conditions: 10_000,
            max_regexes: 16,
            max_regex_bytes: 1 << 20,
        }
    }
}
