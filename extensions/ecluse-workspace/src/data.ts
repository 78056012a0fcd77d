/**
 * The Data panel: the project's datasets, their description, the columns of each
 * table with their types, row counts, and the shapes of arrays (Zarr, netCDF).
 *
 * The server extension (GET ecluse/datasets, ecluse_workspace/catalogue.py)
 * reads structure only — never a value, not even Parquet min/max statistics —
 * so nothing here can show one.
 */
import { ILayoutRestorer, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette } from '@jupyterlab/apputils';
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';
import { ITranslator, nullTranslator, TranslationBundle } from '@jupyterlab/translation';
import { Widget } from '@lumino/widgets';

import { el } from './dom';

const PANEL_ID = 'ecluse-data-panel';
const COMMAND = 'ecluse:open-data-panel';
const DOMAIN = 'ecluse_workspace';

interface IColumn {
  name: string;
  type: string;
}
interface ITable {
  path: string;
  format: string;
  rows: number | null;
  columns: IColumn[];
  parts: number;
  error: string | null;
  header?: boolean;
}
interface IArray {
  name: string;
  dims: string[];
  shape: number[];
  dtype: string;
}
interface IStore {
  path: string;
  format: string;
  arrays: IArray[];
  error: string | null;
}
interface IDataset {
  name: string;
  description: string;
  path: string;
  tables: ITable[];
  arrays: IStore[];
  other_files: number;
  truncated: boolean;
  error: string | null;
}
interface ICatalogue {
  project: string;
  datasets: IDataset[];
}

async function fetchCatalogue(): Promise<ICatalogue> {
  const settings = ServerConnection.makeSettings();
  const url = URLExt.join(settings.baseUrl, 'ecluse', 'datasets');
  const response = await ServerConnection.makeRequest(url, {}, settings);
  const data: any = await response.json().catch(() => null);
  if (!response.ok) {
    throw new Error(data?.error?.message || data?.message || `${response.status}`);
  }
  return data as ICatalogue;
}

class DataPanel extends Widget {
  constructor(trans: TranslationBundle) {
    super();
    this.trans = trans;
    this.id = PANEL_ID;
    this.title.label = trans.__('Data');
    this.title.caption = trans.__('Datasets of this project: columns, types, row counts');
    this.addClass('ecluse-data-panel');
    const top = el('div', { class: 'ecluse-data-top' });
    this.header = el('h2', {}, trans.__('Data'));
    const refresh = el('button', { class: 'jp-mod-styled ecluse-data-refresh' }, trans.__('Refresh'));
    refresh.onclick = () => void this.refresh();
    top.append(this.header, refresh);
    this.body = el('div', { class: 'ecluse-data-body' });
    this.node.append(top, this.body);
  }

  protected onAfterShow(): void {
    if (!this.loaded) {
      void this.refresh();
    }
  }

  async refresh(): Promise<void> {
    const trans = this.trans;
    this.body.replaceChildren(el('p', { class: 'ecluse-data-note' }, trans.__('Reading the datasets…')));
    let data: ICatalogue;
    try {
      data = await fetchCatalogue();
    } catch (e) {
      this.body.replaceChildren(
        el('p', { class: 'ecluse-error' }, trans.__('Could not list the datasets: %1', String((e as Error).message)))
      );
      return;
    }
    this.loaded = true;
    this.header.textContent = trans.__('Data — %1', data.project);
    const nodes: HTMLElement[] = [];
    if (!data.datasets.length) {
      nodes.push(el('p', {}, trans.__('This project has no dataset.')));
    }
    for (const d of data.datasets) {
      nodes.push(this.renderDataset(d));
    }
    nodes.push(
      el('p', { class: 'ecluse-data-note' }, trans.__('Structure only: no value of the data is shown here.'))
    );
    this.body.replaceChildren(...nodes);
  }

  private renderDataset(d: IDataset): HTMLElement {
    const trans = this.trans;
    const box = el('details', { class: 'ecluse-dataset', 'data-dataset': d.name });
    box.open = true;
    const summary = el('summary', {});
    summary.append(el('span', { class: 'ecluse-dataset-name' }, d.name), ' ', el('code', {}, d.path));
    box.append(summary);
    if (d.description) {
      box.append(el('p', { class: 'ecluse-dataset-description' }, d.description));
    }
    if (d.error) {
      box.append(el('p', { class: 'ecluse-error' }, trans.__('Not available: %1', d.error)));
    }
    for (const t of d.tables) {
      const tb = el('details', { class: 'ecluse-table', 'data-path': t.path });
      const head = el('summary', {});
      head.append(el('code', {}, t.path), ' ');
      const meta: string[] = [t.format.toUpperCase()];
      if (t.rows !== null && t.rows !== undefined) {
        meta.push(trans.__('%1 rows', t.rows.toLocaleString()));
      }
      meta.push(trans.__('%1 columns', String(t.columns.length)));
      if (t.parts > 1) {
        meta.push(trans.__('%1 files', String(t.parts)));
      }
      head.append(el('span', { class: 'ecluse-table-meta' }, meta.join(' · ')));
      tb.append(head);
      if (t.error) {
        tb.append(el('p', { class: 'ecluse-error' }, t.error));
      }
      if (t.header === false) {
        tb.append(el('p', { class: 'ecluse-data-note' }, trans.__('No header line: the columns are numbered.')));
      }
      const list = el('table', { class: 'ecluse-columns' });
      const hrow = el('tr', {});
      hrow.append(el('th', {}, trans.__('Column')), el('th', {}, trans.__('Type')));
      list.append(hrow);
      for (const c of t.columns) {
        const row = el('tr', {});
        row.append(el('td', {}, c.name), el('td', { class: 'ecluse-column-type' }, c.type));
        list.append(row);
      }
      tb.append(list);
      box.append(tb);
    }
    for (const s of d.arrays) {
      const sb = el('details', { class: 'ecluse-store', 'data-path': s.path });
      const head = el('summary', {});
      head.append(el('code', {}, s.path), ' ', el('span', { class: 'ecluse-table-meta' }, s.format));
      sb.append(head);
      if (s.error) {
        sb.append(el('p', { class: 'ecluse-error' }, s.error));
      }
      const list = el('table', { class: 'ecluse-columns' });
      const hrow = el('tr', {});
      hrow.append(el('th', {}, trans.__('Array')), el('th', {}, trans.__('Dimensions')), el('th', {}, trans.__('Type')));
      list.append(hrow);
      for (const a of s.arrays) {
        const row = el('tr', {});
        const dims = a.dims.length
          ? a.dims.map((n, i) => `${n}: ${a.shape[i] ?? '?'}`).join(' × ')
          : a.shape.join(' × ');
        row.append(el('td', {}, a.name), el('td', {}, dims), el('td', { class: 'ecluse-column-type' }, a.dtype));
        list.append(row);
      }
      sb.append(list);
      box.append(sb);
    }
    if (!d.tables.length && !d.arrays.length && !d.error) {
      box.append(el('p', {}, trans.__('No table or array found.')));
    }
    if (d.other_files) {
      box.append(el('p', { class: 'ecluse-data-note' }, trans.__('%1 other files', String(d.other_files))));
    }
    if (d.truncated) {
      box.append(el('p', { class: 'ecluse-data-note' }, trans.__('Only the first files are listed.')));
    }
    return box;
  }

  private trans: TranslationBundle;
  private header: HTMLElement;
  private body: HTMLElement;
  private loaded = false;
}

export const dataPlugin: JupyterFrontEndPlugin<void> = {
  id: '@ecluse/workspace:data',
  description: 'The Data panel: the project datasets, structure only.',
  autoStart: true,
  optional: [ICommandPalette, ILayoutRestorer, ITranslator],
  activate: (
    app: JupyterFrontEnd,
    palette: ICommandPalette | null,
    restorer: ILayoutRestorer | null,
    translator: ITranslator | null
  ) => {
    const trans = (translator ?? nullTranslator).load(DOMAIN);
    const panel = new DataPanel(trans);
    app.shell.add(panel, 'left', { rank: 850 });
    if (restorer) {
      restorer.add(panel, PANEL_ID);
    }
    app.commands.addCommand(COMMAND, {
      label: trans.__('Show the project datasets'),
      execute: () => {
        app.shell.activateById(PANEL_ID);
        void panel.refresh();
      }
    });
    if (palette) {
      palette.addItem({ command: COMMAND, category: trans.__('Écluse') });
    }
  }
};
