//! What a delivery receipt's `stat` means for the message.

/// The consequence of a DLR `stat` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiptOutcome {
    /// Final: delivered to the handset.
    Delivered,
    /// Final: will not be delivered.
    Undeliverable,
    /// Final: validity ran out at the carrier.
    Expired,
    /// Not final (`ENROUTE`, `ACCEPTD`): no event.
    Intermediate,
}

/// Maps an SMPP 3.4 receipt `stat` (Appendix B, case-insensitive, trimmed) to an outcome.
/// Unknown values count as undeliverable: a final answer beats a message stuck forever.
pub fn classify_stat(stat: &str) -> ReceiptOutcome {
    match stat.trim().to_ascii_uppercase().as_str() {
        "DELIVRD" | "DELIVERED" => ReceiptOutcome::Delivered,
        "EXPIRED" => ReceiptOutcome::Expired,
        "ENROUTE" | "ACCEPTD" | "ACCEPTED" | "SCHEDULED" => ReceiptOutcome::Intermediate,
        _ => ReceiptOutcome::Undeliverable,
    }
}
