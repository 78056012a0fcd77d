/**
 * "Check for export": the airlock's checks on the selected files, before any request.
 *
 * The server extension (ecluse_workspace/check.py) sends the files to the
 * airlock's dry run, which judges them with the checks, disclosure policy and
 * ledger of a real request and keeps nothing. This panel shows each file's
 * verdict, the findings, and the cells they point at in a small table window.
 * Every string goes through the `ecluse_workspace` gettext domain (index.ts).
 */
import { JupyterFrontEnd } from '@jupyterlab/application';
import { ICommandPalette, showErrorMessage } from '@jupyterlab/apputils';
import { URLExt } from '@jupyterlab/coreutils';
import { IDefaultFileBrowser } from '@jupyterlab/filebrowser';
import { ServerConnection } from '@jupyterlab/services';
import { TranslationBundle } from '@jupyterlab/translation';
import { Widget } from '@lumino/widgets';

import { el as node } from './dom';

export const CHECK_COMMAND = 'ecluse:check-export';
const CHECK_PANEL_ID = 'ecluse-check-panel';

interface IFinding {
  rule: string;
  severity: string;
  message: string;
  location: { row?: number; column?: string | number; cell?: string; sheet?: string };
}

interface IPreview {
  columns: string[];
  lines: number[];
  rows: string[][];
  flagged: [number, number][];
  masked: number[];
  more_rows: boolean;
  more_columns: boolean;
}

interface ICheckedFile {
  path: string;
  name: string;
  size: number;
  verdict: string;
  findings: IFinding[];
  more_findings?: number;
  preview: IPreview | null;
}

interface ICheckAnswer {
  project: string;
  files: ICheckedFile[];
}

async function checkFiles(paths: string[]): Promise<ICheckAnswer> {
  const settings = ServerConnection.makeSettings();
  const url = URLExt.join(settings.baseUrl, 'ecluse', 'check');
  const response = await ServerConnection.makeRequest(
    url,
    { method: 'POST', body: JSON.stringify({ paths }) },
    settings
  );
  let data: any = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (!response.ok) {
    throw new Error(
      data?.error?.message || data?.message || `${response.status} ${response.statusText}`
    );
  }
  return data as ICheckAnswer;
}

/** The panel: one section per file checked. */
export class CheckPanel extends Widget {
  constructor(trans: TranslationBundle) {
    super();
    this.trans = trans;
    this.id = CHECK_PANEL_ID;
    this.addClass('ecluse-check-panel');
    this.title.label = trans.__('Check for export');
    this.title.closable = true;
  }

  showRunning(paths: string[]): void {
    this.node.textContent = '';
    this.node.appendChild(node('h2', {}, this.trans.__('Check for export')));
    this.node.appendChild(
      node('p', { class: 'ecluse-check-running' }, this.trans.__('Checking %1 file(s)…', paths.length))
    );
  }

  showError(message: string): void {
    this.node.textContent = '';
    this.node.appendChild(node('h2', {}, this.trans.__('Check for export')));
    this.node.appendChild(node('p', { class: 'ecluse-error' }, message));
  }

  showAnswer(answer: ICheckAnswer): void {
    const trans = this.trans;
    this.node.textContent = '';
    this.node.appendChild(node('h2', {}, trans.__('Check for export')));
    this.node.appendChild(
      node(
        'p',
        { class: 'ecluse-export-note' },
        trans.__(
          'The airlock checked these files as it would in an export request of project %1, against its earlier releases. Nothing was kept and nothing was sent for review.',
          answer.project
        )
      )
    );
    for (const f of answer.files) {
      this.node.appendChild(this.fileSection(f));
    }
  }

  private fileSection(f: ICheckedFile): HTMLElement {
    const trans = this.trans;
    const section = node('section', { class: 'ecluse-check-file', 'data-path': f.path });
    const head = node('h3', {}, f.name + ' ');
    head.appendChild(
      node('span', { class: 'ecluse-verdict', 'data-verdict': f.verdict }, f.verdict)
    );
    section.appendChild(head);
    section.appendChild(node('p', { class: 'ecluse-check-meaning' }, this.meaning(f.verdict)));
    if (f.findings.length) {
      const list = node('ul', { class: 'ecluse-check-findings' });
      for (const x of f.findings) {
        const item = node('li', { 'data-rule': x.rule, 'data-severity': x.severity });
        const where = this.where(x);
        item.textContent = (where ? `${where}: ` : '') + x.message;
        list.appendChild(item);
      }
      if (f.more_findings) {
        list.appendChild(node('li', {}, trans.__('and %1 more findings', f.more_findings)));
      }
      section.appendChild(list);
    } else {
      section.appendChild(node('p', {}, trans.__('No finding.')));
    }
    if (f.preview) {
      section.appendChild(this.table(f.preview));
    }
    return section;
  }

  private meaning(verdict: string): string {
    const trans = this.trans;
    switch (verdict) {
      case 'pass':
        return trans.__('Passes the automatic checks (two output checkers still review it).');
      case 'fail':
        return trans.__('Fails the checks: fix the cells below, or explain them when you request the export.');
      case 'block':
        return trans.__('Blocked: row-level or identifying data cannot leave the project.');
      default:
        return trans.__('The checks cannot judge this file: an output checker will look at it by hand.');
    }
  }

  private where(x: IFinding): string {
    const trans = this.trans;
    const loc = x.location || {};
    if (loc.cell) {
      return trans.__('cell %1', String(loc.cell));
    }
    if (loc.row !== undefined && loc.column !== undefined) {
      return trans.__('line %1, column %2', String(loc.row), String(loc.column));
    }
    if (loc.column !== undefined) {
      return trans.__('column %1', String(loc.column));
    }
    return '';
  }

  private table(p: IPreview): HTMLElement {
    const trans = this.trans;
    const wrap = node('div', { class: 'ecluse-check-preview' });
    const table = node('table');
    const head = node('tr');
    head.appendChild(node('th', {}, trans.__('Line')));
    for (const c of p.columns) {
      head.appendChild(node('th', {}, c));
    }
    table.appendChild(head);
    const flagged = new Set(p.flagged.map(([r, c]) => `${r}:${c}`));
    p.rows.forEach((row, i) => {
      const tr = node('tr');
      tr.appendChild(node('th', {}, String(p.lines[i])));
      row.forEach((cell, j) => {
        const td = node('td', {}, cell);
        if (flagged.has(`${i}:${j}`)) {
          td.classList.add('ecluse-flagged');
        }
        if (p.masked.includes(j)) {
          td.classList.add('ecluse-masked');
        }
        tr.appendChild(td);
      });
      table.appendChild(tr);
    });
    wrap.appendChild(table);
    if (p.more_rows || p.more_columns) {
      wrap.appendChild(
        node('p', { class: 'ecluse-export-note' }, trans.__('Only the rows and columns around the findings are shown.'))
      );
    }
    return wrap;
  }

  private trans: TranslationBundle;
}

/** Register "Check for export" (file browser context menu and command palette). */
export function registerCheck(
  app: JupyterFrontEnd,
  browser: IDefaultFileBrowser,
  palette: ICommandPalette | null,
  trans: TranslationBundle
): void {
  let panel: CheckPanel | null = null;
  app.commands.addCommand(CHECK_COMMAND, {
    label: trans.__('Check for export'),
    caption: trans.__('Run the airlock checks on the selected files; nothing is exported'),
    isEnabled: () => {
      const items = Array.from(browser.selectedItems());
      return items.length > 0 && items.every(i => i.type !== 'directory');
    },
    execute: async () => {
      const paths = Array.from(browser.selectedItems())
        .filter(i => i.type !== 'directory')
        .map(i => i.path);
      if (!paths.length) {
        return;
      }
      if (!panel || panel.isDisposed) {
        panel = new CheckPanel(trans);
      }
      if (!panel.isAttached) {
        app.shell.add(panel, 'main', { mode: 'split-right' });
      }
      app.shell.activateById(panel.id);
      panel.showRunning(paths);
      try {
        panel.showAnswer(await checkFiles(paths));
      } catch (e) {
        panel.showError((e as Error).message);
        await showErrorMessage(trans.__('Check refused'), (e as Error).message);
      }
    }
  });
  app.contextMenu.addItem({
    command: CHECK_COMMAND,
    selector: '.jp-DirListing-item[data-isdir="false"]',
    rank: 2
  });
  if (palette) {
    palette.addItem({ command: CHECK_COMMAND, category: trans.__('Écluse') });
  }
}
