//! Receipt handles: the opaque ASCII token a consumer gets with each delivery and hands back
//! to ack, nack or dead-letter that delivery.
//!
//! Layout: `F1.<instance hex>.<queue id>.<queue offset>.<delivery epoch>`. The instance id
//! changes at every start, so handles from before a restart are refused (the in-memory
//! delivery state they referred to is gone and those messages will be delivered again). The
//! epoch changes at every delivery, so a handle of an earlier delivery of the same message is
//! refused too: only the consumer currently holding the message may settle it.

use crate::error::EngineError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiptHandle {
    pub instance: u64,
    pub queue_id: u32,
    pub offset: u64,
    pub epoch: u64,
}

impl ReceiptHandle {
    pub fn encode(&self) -> String {
        format!(
            "F1.{:x}.{}.{}.{}",
            self.instance, self.queue_id, self.offset, self.epoch
        )
    }

    pub fn decode(s: &str) -> Result<ReceiptHandle, EngineError> {
        let invalid = || EngineError::ForeignHandle(s.to_string());
        let mut parts = s.split('.');
        if parts.next() != Some("F1") {
            return Err(invalid());
        }
        let instance =
            u64::from_str_radix(parts.next().ok_or_else(invalid)?, 16).map_err(|_| invalid())?;
        let queue_id = parts
            .next()
            .ok_or_else(invalid)?
            .parse()
            .map_err(|_| invalid())?;
        let offset = parts
            .next()
            .ok_or_else(invalid)?
            .parse()
            .map_err(|_| invalid())?;
        let epoch = parts
            .next()
            .ok_or_else(invalid)?
            .parse()
            .map_err(|_| invalid())?;
        if parts.next().is_some() {
            return Err(invalid());
        }
        Ok(ReceiptHandle {
            instance,
            queue_id,
            offset,
            epoch,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_round_trip_and_garbage_is_refused() {
        let h = ReceiptHandle {
            instance: 0xabc,
            queue_id: 3,
            offset: 42,
            epoch: 7,
        };
        assert_eq!(ReceiptHandle::decode(&h.encode()).unwrap(), h);
        for bad in [
            "",
            "F1",
            "F1.x.1.2.3",
            "F2.1.1.1.1",
            "F1.1.1.1.1.1",
            "F1.1.-1.1.1",
        ] {
            assert!(
                matches!(
                    ReceiptHandle::decode(bad),
                    Err(EngineError::ForeignHandle(_))
                ),
                "{bad}"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn any_text_decodes_to_a_handle_or_the_invalid_handle_code(s in ".{0,80}") {
            if let Err(e) = ReceiptHandle::decode(&s) {
                proptest::prop_assert!(matches!(e, EngineError::ForeignHandle(_)));
            }
        }
    }
}
