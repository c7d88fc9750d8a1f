//! ListTransactions (key 66), v0-1 (KIP-664): the transactional ids a coordinator owns, filtered by
//! state and producer id; v1 (KIP-994) adds a minimum running duration. v2
//! (`transactional_id_pattern`) is not implemented.

crate::message! {
    pub struct ListTransactionsRequest [api = ListTransactions, versions = "0-1", flexible = "0+"] {
        /// Empty = every state.
        state_filters: Vec<String> = "0+";
        /// Empty = every producer id.
        producer_id_filters: Vec<i64> = "0+";
        /// Only transactions running longer than this; negative = all.
        duration_filter: i64 = "1+", default -1;
    }

    pub struct ListTransactionsResponse [api = ListTransactions, versions = "0-1", flexible = "0+"] {
        throttle_time_ms: i32 = "0+";
        error_code: i16 = "0+";
        /// States in the request's filter that the coordinator does not know.
        unknown_state_filters: Vec<String> = "0+";
        transaction_states: Vec<ListTransactionsResponseTransactionState> = "0+";
    }

    pub struct ListTransactionsResponseTransactionState {
        transactional_id: String = "0+";
        producer_id: i64 = "0+";
        transaction_state: String = "0+";
    }
}
