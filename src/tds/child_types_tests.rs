//! The child tables' column types through perfcopy's own codecs, end to end without a server:
//! Arrow batches built from literals -> bulk-load ROW tokens ([`super::encode`]) -> a reply
//! whose COLMETADATA is hand-built as MS-TDS 2.2.7.4 and SQL Server describe these columns ->
//! [`super::decode`] -> Arrow ([`super::arrow`]) equal to the literals; and hand-built ROW
//! bytes against independently written expected values.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BinaryArray, BooleanArray, Decimal128Array, FixedSizeBinaryArray, Int64Array, RecordBatch, StringArray, StructArray,
    TimestampMillisecondArray,
};
use arrow::datatypes::{Field, Schema, SchemaRef};
use tiberius::{BaseMetaDataColumn, FixedLenType, MetaDataColumn, TypeInfo, VarLenContext, VarLenType};

use super::arrow::Builders;
use super::decode::{DecodeError, ReplyDecoder};
use super::encode::BulkLayout;
use crate::schema::{Column, SqlType};

const LATIN1_GENERAL_CI_AS: [u8; 5] = [0x09, 0x04, 0xD0, 0x00, 0x00];
/// Latin1_General_100_CI_AS_SC_UTF8: LCID 0x0409, CI/KI/WI, fUTF8, version 2.
const LATIN1_UTF8: [u8; 5] = [0x09, 0x04, 0xD0, 0x24, 0x00];

fn columns() -> Vec<Column> {
    let c = |name: &'static str, sql: SqlType, nullable: bool| Column::new(name, sql, nullable);
    vec![
        c("QueryHash", SqlType::Binary(8), true),
        c("PlanHandle", SqlType::VarBinary(64), true),
        c("Blob", SqlType::VarBinaryMax, true),
        c("SqlText", SqlType::NVarCharMax, true),
        c("Risk", SqlType::VarChar(20), true),
        c("Utf8Text", SqlType::VarChar(50), true),
        c("Long1252", SqlType::VarCharMax, true),
        c("PlanXml", SqlType::Xml, true),
        c("SizeMB", SqlType::Decimal { precision: 18, scale: 2 }, true),
        c("IsAdvanced", SqlType::Bit, false),
        c("LogDateUTC", SqlType::DateTime2(3), true),
        c("Reads", SqlType::BigInt, true),
        c("ConfigValue", SqlType::SqlVariant, true),
    ]
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(columns().iter().map(|c| Field::new(c.name, c.sql.arrow_type(), c.nullable)).collect::<Vec<_>>()))
}

fn long_sql() -> String {
    // > 8000 UTF-16 bytes: spans PLP chunks; non-ASCII and a surrogate pair.
    "SELECT é, 😀 FROM dbo.T; ".repeat(400)
}

/// Three rows: values, NULLs, edge values (empty, maximum length).
fn expected() -> RecordBatch {
    let variant = |rows: &[Option<(&str, &str)>]| -> ArrayRef {
        let base: StringArray = rows.iter().map(|r| Some(r.map_or("", |(b, _)| b))).collect();
        let value: StringArray = rows.iter().map(|r| Some(r.map_or("", |(_, v)| v))).collect();
        let fields = match SqlType::SqlVariant.arrow_type() {
            arrow::datatypes::DataType::Struct(f) => f,
            _ => unreachable!(),
        };
        let nulls = arrow::buffer::NullBuffer::from(rows.iter().map(Option::is_some).collect::<Vec<_>>());
        Arc::new(StructArray::new(fields, vec![Arc::new(base), Arc::new(value)], Some(nulls)))
    };
    let max64 = vec![0xABu8; 64];
    let utf8_max = "x".repeat(50);
    let long1252 = "ü€".repeat(4500);
    let arrays: Vec<ArrayRef> = vec![
        Arc::new(FixedSizeBinaryArray::try_from_sparse_iter_with_size([Some(vec![1u8, 2, 3, 4, 5, 6, 7, 8]), None, Some(vec![0; 8])].into_iter(), 8).unwrap()),
        Arc::new(BinaryArray::from(vec![Some(&[0xDEu8, 0xAD][..]), None, Some(&max64[..])])),
        Arc::new(BinaryArray::from(vec![Some(&vec![7u8; 20_000][..]), None, Some(&[][..])])),
        Arc::new(StringArray::from(vec![Some(long_sql()), None, Some(String::new())])),
        Arc::new(StringArray::from(vec![Some("é€ High"), None, Some("")])),
        Arc::new(StringArray::from(vec![Some("Ωé😀"), None, Some(utf8_max.as_str())])),
        Arc::new(StringArray::from(vec![Some(long1252.as_str()), None, Some("")])),
        Arc::new(StringArray::from(vec![Some("<deadlock victim=\"é\"/>"), None, Some("<r/>")])),
        Arc::new(Decimal128Array::from(vec![Some(1_234_567), None, Some(-1)]).with_precision_and_scale(18, 2).unwrap()),
        Arc::new(BooleanArray::from(vec![true, false, true])),
        Arc::new(TimestampMillisecondArray::from(vec![Some(1_709_210_096_789), None, Some(-62_135_596_800_000)])),
        Arc::new(Int64Array::from(vec![Some(i64::MAX), None, Some(-1)])),
        variant(&[Some(("int", "7")), None, Some(("decimal(18,4)", "-12.3400"))]),
    ];
    RecordBatch::try_new(schema(), arrays).unwrap()
}

fn b_varchar(s: &str) -> Vec<u8> {
    let mut v = vec![s.encode_utf16().count() as u8];
    v.extend(s.encode_utf16().flat_map(u16::to_le_bytes));
    v
}

/// COLMETADATA as SQL Server sends it for [`columns`] (MS-TDS 2.2.7.4): UserType, Flags
/// (nullable 0x01, or 0 for BIT NOT NULL), TYPE_INFO, name.
fn server_colmetadata() -> Vec<u8> {
    let infos: Vec<Vec<u8>> = vec![
        vec![0xAD, 8, 0],
        vec![0xA5, 64, 0],
        vec![0xA5, 0xFF, 0xFF],
        [&[0xE7, 0xFF, 0xFF][..], &LATIN1_GENERAL_CI_AS].concat(),
        [&[0xA7, 20, 0][..], &LATIN1_GENERAL_CI_AS].concat(),
        [&[0xA7, 50, 0][..], &LATIN1_UTF8].concat(),
        [&[0xA7, 0xFF, 0xFF][..], &LATIN1_GENERAL_CI_AS].concat(),
        vec![0xF1, 0],
        vec![0x6A, 9, 18, 2],
        vec![0x32],
        vec![0x2A, 3],
        vec![0x26, 8],
        [&[0x62][..], &8016u32.to_le_bytes()].concat(),
    ];
    let mut v = vec![0x81];
    v.extend((infos.len() as u16).to_le_bytes());
    for (c, ti) in columns().iter().zip(infos) {
        v.extend([0, 0, 0, 0, u8::from(c.nullable), 0]);
        v.extend(ti);
        v.extend(b_varchar(c.name));
    }
    v
}

/// The load's columns as tiberius describes them from the server's COLMETADATA.
fn load_meta() -> Vec<MetaDataColumn<'static>> {
    let coll = |b: [u8; 5]| Some(tiberius::Collation::new(u32::from_le_bytes([b[0], b[1], b[2], b[3]]), b[4]));
    let v = |t, len, c| TypeInfo::VarLenSized(VarLenContext::new(t, len, c));
    let tys = vec![
        v(VarLenType::BigBinary, 8, None),
        v(VarLenType::BigVarBin, 64, None),
        v(VarLenType::BigVarBin, 0xFFFF, None),
        v(VarLenType::NVarchar, 0xFFFF, coll(LATIN1_GENERAL_CI_AS)),
        v(VarLenType::BigVarChar, 20, coll(LATIN1_GENERAL_CI_AS)),
        v(VarLenType::BigVarChar, 50, coll(LATIN1_UTF8)),
        v(VarLenType::BigVarChar, 0xFFFF, coll(LATIN1_GENERAL_CI_AS)),
        TypeInfo::Xml { schema: None, size: 0xffff_ffff_ffff_fffe },
        TypeInfo::VarLenSizedPrecision { ty: VarLenType::Decimaln, size: 9, precision: 18, scale: 2 },
        TypeInfo::FixedLen(FixedLenType::Bit),
        v(VarLenType::Datetime2, 3, None),
        v(VarLenType::Intn, 8, None),
        v(VarLenType::SSVariant, 8016, None),
    ];
    columns()
        .iter()
        .zip(tys)
        .map(|(c, ty)| MetaDataColumn { base: BaseMetaDataColumn { flags: Default::default(), ty, table_name: None }, col_name: c.name.into() })
        .collect()
}

fn done(rows: u64) -> Vec<u8> {
    let mut v = vec![0xFD, 0x10, 0, 0xC1, 0];
    v.extend(rows.to_le_bytes());
    v
}

/// `reply` decoded into a batch of [`schema`], fed in packets of `packet` bytes.
fn decode(reply: &[u8], packet: usize) -> Result<RecordBatch, DecodeError> {
    let s = schema();
    let mut b = Builders::new(&s, 4).expect("builders");
    let mut d = ReplyDecoder::new();
    for p in reply.chunks(packet) {
        d.packet(p, &mut b)?;
    }
    d.finish()?;
    Ok(b.finish(&s).expect("batch"))
}

#[test]
fn child_types_bulk_encode_then_decode_to_the_same_arrow_values() {
    let want = expected();
    let layout = BulkLayout::for_batch(&columns(), &load_meta()).unwrap();
    let mut rows = Vec::new();
    layout.encode(&want, 0..want.num_rows(), &mut rows).unwrap();
    let mut reply = server_colmetadata();
    reply.extend(&rows);
    reply.extend(done(3));
    for packet in [reply.len(), 4096, 512, 7] {
        let got = decode(&reply, packet).unwrap_or_else(|e| panic!("packets of {packet}: {e}"));
        for (i, f) in want.schema().fields().iter().enumerate() {
            assert_eq!(got.column(i).as_ref(), want.column(i).as_ref(), "column {} in packets of {packet}", f.name());
        }
    }
}

#[test]
fn hand_built_rows_decode_to_independent_values() {
    // Row 1 as MS-TDS lays it out, written byte by byte (not by the encoder).
    let mut row = vec![0xD1];
    row.extend([8, 0, 1, 2, 3, 4, 5, 6, 7, 8]); // BINARY(8)
    row.extend([2, 0, 0xDE, 0xAD]); // VARBINARY(64)
    // VARBINARY(MAX) as PLP of unknown length (0xFFFFFFFFFFFFFFFE), two chunks.
    row.extend(0xFFFF_FFFF_FFFF_FFFEu64.to_le_bytes());
    row.extend(1u32.to_le_bytes());
    row.push(0x01);
    row.extend(1u32.to_le_bytes());
    row.push(0x02);
    row.extend(0u32.to_le_bytes());
    let utf16 = |s: &str| s.encode_utf16().flat_map(u16::to_le_bytes).collect::<Vec<u8>>();
    let plp = |b: &[u8]| [&(b.len() as u64).to_le_bytes()[..], &(b.len() as u32).to_le_bytes(), b, &0u32.to_le_bytes()].concat();
    row.extend(plp(&utf16("Ωmega")));
    row.extend([4, 0, 0xE9, 0x80, b'a', b'b']); // VARCHAR 1252: 'é€ab'
    row.extend([2, 0, 0xCE, 0xA9]); // UTF-8 'Ω'
    row.extend(plp(&[0xFC])); // 1252 'ü'
    row.extend(plp(&[&[0xFF, 0xFE][..], &utf16("<a/>")].concat())); // XML with a byte-order mark
    row.extend([9, 1]);
    row.extend(12_345u64.to_le_bytes()); // 123.45
    row.push(1); // BIT
    row.push(7);
    row.extend(1_234u32.to_le_bytes());
    row.extend(&719_162u32.to_le_bytes()[..3]); // 1970-01-01T00:00:01.234
    row.push(8);
    row.extend(42i64.to_le_bytes());
    row.extend(6u32.to_le_bytes());
    row.extend([0x38, 0, 0xFF, 0xFF, 0xFF, 0xFF]); // sql_variant int -1
    // Row 2: every nullable column NULL in an NBCROW (BIT NOT NULL is column 10).
    let mut nbc = vec![0xD2, 0xFF, 0b0001_1101];
    nbc.push(0);
    let mut reply = server_colmetadata();
    reply.extend(row);
    reply.extend(nbc);
    reply.extend(done(2));
    let got = decode(&reply, 100).unwrap();
    let fixed = got.column(0).as_any().downcast_ref::<FixedSizeBinaryArray>().unwrap();
    assert_eq!((fixed.value(0), fixed.is_null(1)), (&[1u8, 2, 3, 4, 5, 6, 7, 8][..], true));
    let bin = |i: usize| got.column(i).as_any().downcast_ref::<BinaryArray>().unwrap().clone();
    assert_eq!((bin(1).value(0), bin(2).value(0), bin(2).is_null(1)), (&[0xDE, 0xAD][..], &[1, 2][..], true));
    let text = |i: usize| got.column(i).as_any().downcast_ref::<StringArray>().unwrap().clone();
    let texts: Vec<_> = [3, 4, 5, 6, 7].iter().map(|&i| text(i).value(0).to_string()).collect();
    assert_eq!(texts, ["Ωmega", "é€ab", "Ω", "ü", "<a/>"]);
    assert!([3, 4, 5, 6, 7].iter().all(|&i| text(i).is_null(1)));
    assert_eq!(got.column(8).as_any().downcast_ref::<Decimal128Array>().unwrap().value(0), 12_345);
    let bits = got.column(9).as_any().downcast_ref::<BooleanArray>().unwrap();
    assert_eq!((bits.value(0), bits.value(1), bits.null_count()), (true, false, 0));
    assert_eq!(got.column(10).as_any().downcast_ref::<TimestampMillisecondArray>().unwrap().value(0), 1_234);
    assert_eq!(got.column(11).as_any().downcast_ref::<Int64Array>().unwrap().value(0), 42);
    let v = got.column(12).as_any().downcast_ref::<StructArray>().unwrap();
    let field = |name: &str| v.column_by_name(name).unwrap().as_any().downcast_ref::<StringArray>().unwrap().value(0).to_string();
    assert_eq!((field("base_type"), field("value"), v.is_null(1)), ("int".to_string(), "-1".to_string(), true));
}

#[test]
fn a_collation_without_a_code_page_is_unsupported_naming_it() {
    let mut reply = vec![0x81, 1, 0, 0, 0, 0, 0, 1, 0, 0xA7, 20, 0, 0xFF, 0xFF, 0x0F, 0x00, 0x00];
    reply.extend(b_varchar("Odd"));
    let s = Arc::new(Schema::new(vec![Field::new("Odd", arrow::datatypes::DataType::Utf8, true)]));
    let mut b = Builders::new(&s, 1).unwrap();
    match ReplyDecoder::new().feed(&reply, &mut b) {
        Err(DecodeError::Unsupported(m)) => assert!(m.contains("'Odd'") && m.contains("LCID 0xFFFFF"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_character_the_target_code_page_lacks_is_an_error_naming_column_and_row() {
    let mut batch = expected();
    let mut cols = batch.columns().to_vec();
    cols[4] = Arc::new(StringArray::from(vec![Some("ok"), None, Some("Ω")]));
    batch = RecordBatch::try_new(schema(), cols).unwrap();
    let layout = BulkLayout::for_batch(&columns(), &load_meta()).unwrap();
    let err = layout.encode(&batch, 0..3, &mut Vec::new()).unwrap_err();
    assert!(err.contains("column Risk at row 2") && err.contains("'Ω'") && err.contains("windows-1252"), "{err}");
    // Longer than the column in its code page: 21 bytes into VARCHAR(20).
    cols = expected().columns().to_vec();
    cols[4] = Arc::new(StringArray::from(vec![Some("é".repeat(21)), None, None]));
    let long = RecordBatch::try_new(schema(), cols).unwrap();
    assert!(layout.encode(&long, 0..1, &mut Vec::new()).unwrap_err().contains("column Risk at row 0 of the batch: value does not fit VARCHAR(20)"));
    // A NULL into BIT NOT NULL.
    cols = expected().columns().to_vec();
    cols[9] = Arc::new(BooleanArray::from(vec![Some(true), None, Some(true)]));
    let null_bit = RecordBatch::try_new(Arc::new(Schema::new(schema().fields().iter().map(|f| f.as_ref().clone().with_nullable(true)).collect::<Vec<_>>())), cols).unwrap();
    assert!(layout.encode(&null_bit, 0..3, &mut Vec::new()).unwrap_err().contains("column IsAdvanced at row 1"));
}
