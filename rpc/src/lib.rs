//! quasar-rpc: wire format, transport and client library.
