//! Wire types of FerroMQ (filled in by the protocol work).
