//! quasar-wal: the write-ahead log shared by every Raft group of one shard.
