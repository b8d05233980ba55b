//! Attacks through the store.
