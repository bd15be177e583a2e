//! perfcopy
