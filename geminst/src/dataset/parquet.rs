//! A small column-by-column builder for Parquet files, written atomically.
//!
//! Every table geminst writes is built here, so the types, nullability and file metadata are the
//! same everywhere: unsigned counters are UInt64, times are UInt64 CLOCK_MONOTONIC or Unix ns,
//! text is Utf8, and a value that does not exist is null (never 0).

use std::{path::Path, sync::Arc};

use anyhow::{Context, Result, ensure};
use arrow_array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray, UInt32Array, UInt64Array,
};
use arrow_schema::{Field, Schema};
use parquet::{arrow::ArrowWriter, basic::Compression, file::properties::WriterProperties};

use super::files::write_atomic_with;

/// Columns of one table, in order.
#[derive(Default)]
pub struct Table {
    fields: Vec<Field>,
    columns: Vec<ArrayRef>,
}

impl Table {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a column; `nullable` follows from the method (the `opt_` ones), never from the data,
    /// so a file's schema does not depend on what it holds.
    fn push(&mut self, name: &str, column: ArrayRef, nullable: bool) -> &mut Self {
        self.fields.push(Field::new(name, column.data_type().clone(), nullable));
        self.columns.push(column);
        self
    }

    pub fn u64(&mut self, name: &str, values: impl IntoIterator<Item = u64>) -> &mut Self {
        self.push(name, Arc::new(UInt64Array::from_iter_values(values)), false)
    }

    pub fn opt_u64(&mut self, name: &str, values: impl IntoIterator<Item = Option<u64>>) -> &mut Self {
        self.push(name, Arc::new(values.into_iter().collect::<UInt64Array>()), true)
    }

    pub fn u32(&mut self, name: &str, values: impl IntoIterator<Item = u32>) -> &mut Self {
        self.push(name, Arc::new(UInt32Array::from_iter_values(values)), false)
    }

    pub fn opt_u32(&mut self, name: &str, values: impl IntoIterator<Item = Option<u32>>) -> &mut Self {
        self.push(name, Arc::new(values.into_iter().collect::<UInt32Array>()), true)
    }

    pub fn i64(&mut self, name: &str, values: impl IntoIterator<Item = i64>) -> &mut Self {
        self.push(name, Arc::new(Int64Array::from_iter_values(values)), false)
    }

    pub fn opt_i64(&mut self, name: &str, values: impl IntoIterator<Item = Option<i64>>) -> &mut Self {
        self.push(name, Arc::new(values.into_iter().collect::<Int64Array>()), true)
    }

    pub fn f64(&mut self, name: &str, values: impl IntoIterator<Item = f64>) -> &mut Self {
        self.push(name, Arc::new(Float64Array::from_iter_values(values)), false)
    }

    pub fn opt_f64(&mut self, name: &str, values: impl IntoIterator<Item = Option<f64>>) -> &mut Self {
        self.push(name, Arc::new(values.into_iter().collect::<Float64Array>()), true)
    }

    pub fn bool(&mut self, name: &str, values: impl IntoIterator<Item = bool>) -> &mut Self {
        self.push(name, Arc::new(values.into_iter().map(Some).collect::<BooleanArray>()), false)
    }

    pub fn opt_bool(&mut self, name: &str, values: impl IntoIterator<Item = Option<bool>>) -> &mut Self {
        self.push(name, Arc::new(values.into_iter().collect::<BooleanArray>()), true)
    }

    pub fn str<S: AsRef<str>>(&mut self, name: &str, values: impl IntoIterator<Item = S>) -> &mut Self {
        let values: Vec<S> = values.into_iter().collect();
        self.push(name, Arc::new(StringArray::from_iter_values(values.iter().map(|s| s.as_ref()))), false)
    }

    pub fn opt_str<S: AsRef<str>>(
        &mut self,
        name: &str,
        values: impl IntoIterator<Item = Option<S>>,
    ) -> &mut Self {
        let values: Vec<Option<S>> = values.into_iter().collect();
        self.push(
            name,
            Arc::new(values.iter().map(|s| s.as_ref().map(|s| s.as_ref())).collect::<StringArray>()),
            true,
        )
    }

    /// The names of the columns, in order.
    pub fn column_names(&self) -> Vec<&str> {
        self.fields.iter().map(|f| f.name().as_str()).collect()
    }

    /// Writes the table to `path` (via a temporary name and a rename).
    pub fn write(&self, path: &Path) -> Result<()> {
        let rows = self.columns.first().map_or(0, |c| c.len());
        ensure!(
            self.columns.iter().all(|c| c.len() == rows),
            "columns of {} have different lengths",
            path.display()
        );
        let schema = Arc::new(Schema::new(self.fields.clone()));
        let batch = RecordBatch::try_new(schema.clone(), self.columns.clone())
            .with_context(|| format!("assembling the rows of {}", path.display()))?;
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_created_by(format!("geminst {}", env!("CARGO_PKG_VERSION")))
            .build();
        write_atomic_with(path, |file| {
            let mut writer = ArrowWriter::try_new(file, schema, Some(props))?;
            writer.write(&batch)?;
            writer.close()?;
            Ok(())
        })
    }
}
