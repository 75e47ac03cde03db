//! Image references (placeholder while the module is written).
