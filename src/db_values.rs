//! Database columns of Basalt's identifier and status types (the `db` feature, which only the
//! scheduler enables): each is stored as the text it is shown as (a hyphenated UUID, a project id,
//! a Cinder status name) and parsed again when read, so a row that holds anything else fails to
//! load with an error naming the type, instead of becoming a value no code expects.

use sea_orm::{
    ColIdx, DbErr, QueryResult, TryFromU64, TryGetError, TryGetable, Value,
    sea_query::{ArrayType, ColumnType, Nullable, StringLen, ValueType, ValueTypeErr},
};

use crate::{
    ids::{
        AttachmentId, BackupId, GroupId, GroupSnapshotId, GroupTypeId, MessageId, NodeId, OperationId, ProjectId,
        QosSpecsId, SnapshotId, TransferId, VolumeId, VolumeTypeId,
    },
    proto::{AttachMode, AttachStatus, BackupStatus, GroupSnapshotStatus, GroupStatus, SnapshotStatus, VolumeStatus},
};

/// A value kept in a text column.
trait TextColumn: Sized {
    const TYPE_NAME: &'static str;
    /// The column's declared length, as the migrations create it.
    const LENGTH: u32;
    fn to_text(&self) -> String;
    fn from_text(text: &str) -> Option<Self>;
}

macro_rules! text_column {
    ($name:ty, $length:literal, |$value:ident| $show:expr, |$text:ident| $parse:expr) => {
        impl TextColumn for $name {
            const TYPE_NAME: &'static str = stringify!($name);
            const LENGTH: u32 = $length;

            fn to_text(&self) -> String {
                let $value = self;
                $show
            }

            fn from_text($text: &str) -> Option<Self> {
                $parse
            }
        }

        impl From<$name> for Value {
            fn from(value: $name) -> Self {
                Value::String(Some(value.to_text()))
            }
        }

        impl TryGetable for $name {
            fn try_get_by<I: ColIdx>(result: &QueryResult, index: I) -> Result<Self, TryGetError> {
                let text = String::try_get_by(result, index)?;
                <$name as TextColumn>::from_text(&text).ok_or_else(|| unreadable(Self::TYPE_NAME, &text))
            }
        }

        impl ValueType for $name {
            fn try_from(value: Value) -> Result<Self, ValueTypeErr> {
                let text = <String as ValueType>::try_from(value)?;
                <$name as TextColumn>::from_text(&text).ok_or(ValueTypeErr)
            }

            fn type_name() -> String {
                Self::TYPE_NAME.to_owned()
            }

            fn array_type() -> ArrayType {
                ArrayType::String
            }

            fn column_type() -> ColumnType {
                ColumnType::String(StringLen::N(Self::LENGTH))
            }
        }

        impl Nullable for $name {
            fn null() -> Value {
                Value::String(None)
            }
        }

        impl sea_orm::IntoActiveValue<$name> for $name {
            fn into_active_value(self) -> sea_orm::ActiveValue<$name> {
                sea_orm::ActiveValue::Set(self)
            }
        }

        /// Primary keys must claim this; ours are never numbers.
        impl TryFromU64 for $name {
            fn try_from_u64(_: u64) -> Result<Self, DbErr> {
                Err(DbErr::ConvertFromU64(Self::TYPE_NAME))
            }
        }
    };
}

fn unreadable(type_name: &str, text: &str) -> TryGetError {
    TryGetError::DbErr(DbErr::Type(format!("a stored {type_name} is not one: {:?}", crate::error::excerpt(text))))
}

macro_rules! uuid_columns {
    ($($name:ty),*) => {$(
        text_column!($name, 36, |id| id.to_string(), |text| text.parse().ok());
    )*};
}

uuid_columns!(
    VolumeId,
    SnapshotId,
    BackupId,
    AttachmentId,
    VolumeTypeId,
    QosSpecsId,
    OperationId,
    TransferId,
    MessageId,
    GroupTypeId,
    GroupId,
    GroupSnapshotId
);
text_column!(ProjectId, 64, |id| id.as_str().to_owned(), |text| ProjectId::parse(text).ok());
text_column!(NodeId, 64, |id| id.as_str().to_owned(), |text| NodeId::parse(text).ok());

macro_rules! status_columns {
    ($($name:ty),*) => {$(
        text_column!($name, 32, |status| status.cinder_name().to_owned(), |text| <$name>::from_cinder_name(text));
    )*};
}

status_columns!(VolumeStatus, AttachStatus, SnapshotStatus, BackupStatus, GroupStatus, GroupSnapshotStatus);
text_column!(AttachMode, 8, |mode| mode.cinder_name().to_owned(), |text| AttachMode::from_cinder_name(text));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_stored_as_the_text_they_show_and_read_back_strictly() {
        let id = VolumeId::new_random();
        assert_eq!(Value::from(id), Value::String(Some(id.to_string())));
        assert_eq!(<VolumeId as ValueType>::try_from(Value::from(id)).unwrap(), id);
        assert_eq!(Value::from(VolumeStatus::InUse), Value::String(Some("in-use".into())));
        assert_eq!(<VolumeStatus as ValueType>::try_from(Value::from("in-use")).unwrap(), VolumeStatus::InUse);
        assert!(<VolumeStatus as ValueType>::try_from(Value::from("sideways")).is_err());
        assert!(<ProjectId as ValueType>::try_from(Value::from("..")).is_err());
        assert!(<AttachMode as ValueType>::try_from(Value::from("ro")).is_ok_and(|mode| mode == AttachMode::ReadOnly));
    }
}
