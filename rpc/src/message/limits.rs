//! Size limits on keys, values and frames, and the request validation that
//! enforces them (DESIGN "Data model and ranges": refused with a clear error).
//!
//! Owns the checks only. A node runs [`SizeLimits::validate_archived_request`]
//! on a request read in place before proposing it; the client runs
//! [`SizeLimits::validate_request`] before sending, so a bad request fails
//! fast and definitely. Both share one body (a macro over the owned and the
//! archived types), so they cannot drift apart.

use super::admin::{
    AdminOp, AdminRequest, ArchivedAdminOp, ArchivedAdminRequest, ArchivedRangeSelector,
    RangeSelector,
};
use super::client::{
    ArchivedClientRequest, ArchivedCompareTarget, ArchivedExpected, ArchivedOperation,
    ArchivedTxnOp, ClientRequest, CompareTarget, Expected, InvalidReason, LimitKind, Operation,
    RequestError, TxnOp,
};

/// Limits on what a request may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizeLimits {
    /// Longest key in bytes.
    pub max_key_bytes: u32,
    /// Longest value in bytes.
    pub max_value_bytes: u32,
    /// Longest frame body in bytes (the transport's [`crate::frame::FrameDecoder`] limit).
    pub max_frame_bytes: u32,
}

impl SizeLimits {
    /// 8 KiB: a directory entry key (parent inode + a 4 KiB path component) fits whole.
    pub const DEFAULT_MAX_KEY_BYTES: u32 = 8 << 10;
    /// 1 MiB: metadata values are small; bulk data belongs in the chunk store.
    pub const DEFAULT_MAX_VALUE_BYTES: u32 = 1 << 20;
    /// 16 MiB: room for a transaction of several maximal values and for Raft
    /// append batches of a few MiB, while one frame stays a bounded buffer.
    pub const DEFAULT_MAX_FRAME_BYTES: u32 = 16 << 20;
}

impl Default for SizeLimits {
    fn default() -> SizeLimits {
        SizeLimits {
            max_key_bytes: SizeLimits::DEFAULT_MAX_KEY_BYTES,
            max_value_bytes: SizeLimits::DEFAULT_MAX_VALUE_BYTES,
            max_frame_bytes: SizeLimits::DEFAULT_MAX_FRAME_BYTES,
        }
    }
}

fn too_large(what: LimitKind, len: usize, max: u32) -> RequestError {
    RequestError::TooLarge {
        what,
        len: len as u64,
        max: u64::from(max),
    }
}

fn invalid(reason: InvalidReason) -> RequestError {
    RequestError::InvalidRequest { reason }
}

macro_rules! validate_txn_op {
    ($limits:expr, $op:expr, $TxnOp:ident) => {
        match $op {
            $TxnOp::Get { key } | $TxnOp::Delete { key } => $limits.check_key(key.as_slice()),
            $TxnOp::Put { key, value } => {
                $limits.check_key(key.as_slice())?;
                $limits.check_value(value.len())
            }
            $TxnOp::DeleteRange { start, end } => {
                $limits.check_span(start.as_slice(), end.as_slice())
            }
        }
    };
}

macro_rules! validate_operation {
    ($limits:expr, $op:expr, $Op:ident, $Expected:ident, $Target:ident, $TxnOp:ident) => {
        match $op {
            $Op::Get { key } | $Op::Delete { key } | $Op::Increment { key, .. } => {
                $limits.check_key(key.as_slice())
            }
            $Op::Put { key, value } => {
                $limits.check_key(key.as_slice())?;
                $limits.check_value(value.len())
            }
            $Op::CompareAndSet {
                key,
                expected,
                value,
            } => {
                $limits.check_key(key.as_slice())?;
                if let $Expected::Value(expected) = expected {
                    $limits.check_value(expected.len())?;
                }
                $limits.check_value(value.len())
            }
            $Op::DeleteRange { start, end } => $limits.check_span(start.as_slice(), end.as_slice()),
            $Op::Scan(scan) => {
                $limits.check_span(scan.start.as_slice(), scan.end.as_slice())?;
                if scan.max_count == 0 || scan.max_bytes == 0 {
                    return Err(invalid(InvalidReason::ZeroScanLimit));
                }
                Ok(())
            }
            $Op::Txn(txn) => {
                for compare in txn.compares.iter() {
                    $limits.check_key(compare.key.as_slice())?;
                    if let $Target::Value(value) = &compare.target {
                        $limits.check_value(value.len())?;
                    }
                }
                for op in txn.success.iter().chain(txn.failure.iter()) {
                    validate_txn_op!($limits, op, $TxnOp)?;
                }
                Ok(())
            }
        }
    };
}

macro_rules! validate_admin_op {
    ($limits:expr, $op:expr, $Op:ident, $Selector:ident) => {
        match $op {
            $Op::SplitRange { split_key, .. } => $limits.check_key(split_key.as_slice()),
            $Op::ListRanges { start_key, limit } => {
                if start_key.len() > $limits.max_key_bytes as usize {
                    return Err(too_large(
                        LimitKind::Key,
                        start_key.len(),
                        $limits.max_key_bytes,
                    ));
                }
                if *limit == 0 {
                    return Err(invalid(InvalidReason::ZeroScanLimit));
                }
                Ok(())
            }
            $Op::DescribeRange($Selector::Key(key)) => {
                if key.len() > $limits.max_key_bytes as usize {
                    return Err(too_large(LimitKind::Key, key.len(), $limits.max_key_bytes));
                }
                Ok(())
            }
            $Op::AddReplica { node, .. }
            | $Op::RemoveReplica { node, .. }
            | $Op::AddMember { node, .. }
            | $Op::RemoveMember { node }
            | $Op::TransferLeader { to: node, .. } => {
                if node.0 == 0 {
                    return Err(invalid(InvalidReason::BadReplicaChange));
                }
                Ok(())
            }
            $Op::MoveReplica { from, to, .. } => {
                if from.0 == 0 || to.0 == 0 || from == to {
                    return Err(invalid(InvalidReason::BadReplicaChange));
                }
                Ok(())
            }
            $Op::DescribeRange($Selector::Id(_))
            | $Op::MergeRanges { .. }
            | $Op::ListMembers
            | $Op::Status => Ok(()),
        }
    };
}

impl SizeLimits {
    /// A key must be non-empty and at most `max_key_bytes` long.
    pub fn check_key(&self, key: &[u8]) -> Result<(), RequestError> {
        if key.is_empty() {
            return Err(invalid(InvalidReason::EmptyKey));
        }
        if key.len() > self.max_key_bytes as usize {
            return Err(too_large(LimitKind::Key, key.len(), self.max_key_bytes));
        }
        Ok(())
    }

    /// A value must be at most `max_value_bytes` long.
    pub fn check_value(&self, len: usize) -> Result<(), RequestError> {
        if len > self.max_value_bytes as usize {
            return Err(too_large(LimitKind::Value, len, self.max_value_bytes));
        }
        Ok(())
    }

    /// A frame body must be at most `max_frame_bytes` long.
    pub fn check_frame(&self, len: usize) -> Result<(), RequestError> {
        if len > self.max_frame_bytes as usize {
            return Err(too_large(LimitKind::Frame, len, self.max_frame_bytes));
        }
        Ok(())
    }

    /// A span `[start, end)`: `start` may be empty (the first key), `end`
    /// empty means unbounded; otherwise `start < end`. Both within the key limit.
    pub fn check_span(&self, start: &[u8], end: &[u8]) -> Result<(), RequestError> {
        for bound in [start, end] {
            if bound.len() > self.max_key_bytes as usize {
                return Err(too_large(LimitKind::Key, bound.len(), self.max_key_bytes));
            }
        }
        if !end.is_empty() && end <= start {
            return Err(invalid(InvalidReason::EmptySpan));
        }
        Ok(())
    }

    /// Checks a request before it is sent: sizes and well-formedness.
    pub fn validate_request(&self, request: &ClientRequest) -> Result<(), RequestError> {
        self.validate_operation(&request.op)
    }

    /// Checks an operation (see [`SizeLimits::validate_request`]).
    pub fn validate_operation(&self, op: &Operation) -> Result<(), RequestError> {
        validate_operation!(self, op, Operation, Expected, CompareTarget, TxnOp)
    }

    /// Checks a request read in place from a frame, before acting on it.
    pub fn validate_archived_request(
        &self,
        request: &ArchivedClientRequest,
    ) -> Result<(), RequestError> {
        self.validate_archived_operation(&request.op)
    }

    /// Checks an archived operation (see [`SizeLimits::validate_archived_request`]).
    pub fn validate_archived_operation(&self, op: &ArchivedOperation) -> Result<(), RequestError> {
        validate_operation!(
            self,
            op,
            ArchivedOperation,
            ArchivedExpected,
            ArchivedCompareTarget,
            ArchivedTxnOp
        )
    }

    /// Checks an admin request before it is sent.
    pub fn validate_admin_request(&self, request: &AdminRequest) -> Result<(), RequestError> {
        validate_admin_op!(self, &request.op, AdminOp, RangeSelector)
    }

    /// Checks an admin request read in place from a frame.
    pub fn validate_archived_admin_request(
        &self,
        request: &ArchivedAdminRequest,
    ) -> Result<(), RequestError> {
        validate_admin_op!(self, &request.op, ArchivedAdminOp, ArchivedRangeSelector)
    }
}
