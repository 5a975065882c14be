//! Iceberg input (the order-flow pipeline's users keep their ticks there): a table given by its
//! `metadata.json` location. The `iceberg` crate plans the data files, pruning by partition with
//! the instrument and time range; polars reads the files. The table's metadata, manifest list and
//! manifests are fetched through this crate's own I/O (local or S3) into an in-memory `FileIO`, so
//! no other storage backend is needed.

use anyhow::{anyhow, bail, Context, Result};
use futures::TryStreamExt;
use iceberg::expr::{Predicate, Reference};
use iceberg::io::FileIO;
use iceberg::spec::{Datum, ManifestList, PrimitiveType, TableMetadata, Type};
use iceberg::table::StaticTable;
use iceberg::TableIdent;

use super::Location;

/// Whether `uri` names an Iceberg table's metadata file rather than a Parquet root.
pub fn is_metadata_location(uri: &str) -> bool {
    uri.trim_end_matches('/').ends_with(".metadata.json")
        || uri.trim_end_matches('/').ends_with("/metadata.json")
}

/// What to read: the instrument and the time range `[start_us, end_us)` (UTC microseconds).
#[derive(Debug, Clone)]
pub struct Filter {
    pub instrument_column: String,
    pub instrument: i64,
    pub ts_column: String,
    pub start_us: i64,
    pub end_us: i64,
}

/// The table's column names (current schema).
pub fn columns(metadata_uri: &str) -> Result<Vec<String>> {
    super::s3::block_on(async {
        let file_io = FileIO::new_with_memory();
        stage(&file_io, metadata_uri).await?;
        let metadata = TableMetadata::read_from(&file_io, metadata_uri)
            .await
            .with_context(|| format!("{metadata_uri} is not Iceberg table metadata"))?;
        Ok(metadata
            .current_schema()
            .as_struct()
            .fields()
            .iter()
            .map(|f| f.name.clone())
            .collect())
    })
}

/// The data files that may hold rows matching `filter`, in a stable order.
pub fn plan(metadata_uri: &str, filter: &Filter) -> Result<Vec<Location>> {
    super::s3::block_on(plan_async(metadata_uri, filter))
}

async fn stage(file_io: &FileIO, path: &str) -> Result<()> {
    let bytes = super::read_async(&Location::parse(path)?)
        .await
        .with_context(|| format!("reading {path}"))?;
    file_io.new_output(path)?.write(bytes.into()).await?;
    Ok(())
}

async fn plan_async(metadata_uri: &str, filter: &Filter) -> Result<Vec<Location>> {
    let file_io = FileIO::new_with_memory();
    stage(&file_io, metadata_uri).await?;
    let metadata = TableMetadata::read_from(&file_io, metadata_uri)
        .await
        .with_context(|| format!("{metadata_uri} is not Iceberg table metadata"))?;
    let Some(snapshot) = metadata.current_snapshot() else {
        return Ok(Vec::new());
    };
    stage(&file_io, snapshot.manifest_list()).await?;
    let list_bytes = file_io.new_input(snapshot.manifest_list())?.read().await?;
    let list = ManifestList::parse_with_version(&list_bytes, metadata.format_version())?;
    for manifest in list.entries() {
        stage(&file_io, &manifest.manifest_path).await?;
    }

    let schema = metadata.current_schema().clone();
    let field_type = |name: &str| -> Result<PrimitiveType> {
        match schema
            .field_by_name(name)
            .map(|f| f.field_type.as_ref().clone())
        {
            Some(Type::Primitive(p)) => Ok(p),
            Some(other) => bail!("Iceberg column `{name}` has type {other}, expected a primitive"),
            None => bail!("the Iceberg table has no column `{name}`"),
        }
    };
    let ts_type = field_type(&filter.ts_column)?;
    let id_type = field_type(&filter.instrument_column)?;
    if !matches!(id_type, PrimitiveType::Int | PrimitiveType::Long) {
        bail!(
            "Iceberg column `{}` has type {id_type}, expected int or long",
            filter.instrument_column
        );
    }
    let ts = Reference::new(&filter.ts_column);
    let range: Predicate = match ts_type {
        PrimitiveType::Timestamp | PrimitiveType::Timestamptz => ts
            .clone()
            .greater_than_or_equal_to(Datum::long(filter.start_us))
            .and(ts.less_than(Datum::long(filter.end_us))),
        PrimitiveType::TimestampNs | PrimitiveType::TimestamptzNs => {
            let ns = |us: i64| {
                if ts_type == PrimitiveType::TimestampNs {
                    Datum::timestamp_nanos(us * 1000)
                } else {
                    Datum::timestamptz_nanos(us * 1000)
                }
            };
            ts.clone()
                .greater_than_or_equal_to(ns(filter.start_us))
                .and(ts.less_than(ns(filter.end_us)))
        }
        other => bail!(
            "Iceberg column `{}` has type {other}, expected a timestamp",
            filter.ts_column
        ),
    };
    let predicate = Reference::new(&filter.instrument_column)
        .equal_to(Datum::long(filter.instrument))
        .and(range);

    let ident = TableIdent::from_strs(["runtime", "input"])?;
    let table = StaticTable::from_metadata_file(metadata_uri, ident, file_io).await?;
    let scan = table.scan().select_all().with_filter(predicate).build()?;
    let tasks: Vec<_> = scan.plan_files().await?.try_collect().await?;
    let mut files = Vec::new();
    for task in tasks {
        if !task.deletes.is_empty() {
            return Err(anyhow!(
                "{} has delete files (row-level deletes), which this reader does not apply; compact the table first",
                task.data_file_path
            ));
        }
        let loc = Location::parse(&task.data_file_path)?;
        if !files.contains(&loc) {
            files.push(loc);
        }
    }
    files.sort();
    Ok(files)
}
