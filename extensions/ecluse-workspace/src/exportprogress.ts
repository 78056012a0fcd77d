/**
 * The progress of an export (issue 22 item 6): per file, the bytes the workspace
 * server has sent to the airlock out of the file's size, then "checking…" until
 * the airlock's background check gives the file its verdict.
 *
 * The server streams its progress (`POST /ecluse/export` with `"progress": true`
 * answers one JSON object a line, see ecluse_workspace/export.py); this module
 * reads the stream, shows it in a dialog and resolves with the export's answer.
 */
import { Dialog } from '@jupyterlab/apputils';
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';
import { TranslationBundle } from '@jupyterlab/translation';
import { Widget } from '@lumino/widgets';

/** One line of the server's progress stream. */
interface IProgressEvent {
  files?: { path: string; name: string; size: number }[];
  path?: string;
  sent?: number;
  size?: number;
  verdict?: string | null;
  result?: any;
  error?: { code: string; status: number; message: string };
}

interface IRow {
  li: HTMLLIElement;
  bar: HTMLProgressElement;
  bytes: HTMLSpanElement;
  status: HTMLSpanElement;
}

/** The per-file rows of the progress dialog. */
export class ExportProgress extends Widget {
  constructor(trans: TranslationBundle) {
    super();
    this.trans = trans;
    this.addClass('ecluse-export-progress');
    this.list = document.createElement('ul');
    this.list.className = 'ecluse-progress-files';
    this.node.appendChild(this.list);
  }

  /** One line of the server's progress stream, shown. */
  report(event: IProgressEvent): void {
    if (event.files) {
      for (const f of event.files) {
        this.add(f.path, f.name, f.size);
      }
    }
    const row = event.path !== undefined ? this.rows.get(event.path) : undefined;
    if (!row) {
      return;
    }
    if (event.sent !== undefined) {
      const size = event.size ?? Number(row.bar.max);
      row.bar.max = Math.max(size, 1);
      row.bar.value = Math.min(event.sent, size);
      row.li.dataset.sent = String(event.sent);
      row.li.dataset.status = 'sending';
      row.bytes.textContent = this.trans.__('%1 of %2 bytes sent', event.sent, size);
      row.status.textContent = this.trans.__('sending…');
    }
    if (event.verdict !== undefined && event.verdict !== null) {
      row.bar.value = Number(row.bar.max);
      row.li.dataset.status = event.verdict === 'checking' ? 'checking' : 'checked';
      row.li.dataset.verdict = event.verdict;
      row.status.textContent =
        event.verdict === 'checking'
          ? this.trans.__('checking…')
          : this.trans.__('verdict: %1', event.verdict);
    }
  }

  private add(path: string, name: string, size: number): void {
    const li = document.createElement('li');
    li.className = 'ecluse-progress-file';
    li.dataset.path = path;
    li.dataset.size = String(size);
    li.dataset.sent = '0';
    li.dataset.status = 'waiting';
    const label = document.createElement('div');
    label.className = 'ecluse-progress-name';
    label.textContent = name;
    const bar = document.createElement('progress');
    bar.max = Math.max(size, 1);
    bar.value = 0;
    bar.setAttribute('aria-label', this.trans.__('Upload of %1', name));
    const bytes = document.createElement('span');
    bytes.className = 'ecluse-progress-bytes';
    bytes.textContent = this.trans.__('%1 of %2 bytes sent', 0, size);
    const status = document.createElement('span');
    status.className = 'ecluse-progress-status';
    status.textContent = this.trans.__('waiting');
    li.append(label, bar, bytes, document.createTextNode(' · '), status);
    this.list.appendChild(li);
    this.rows.set(path, { li, bar, bytes, status });
  }

  private trans: TranslationBundle;
  private list: HTMLUListElement;
  private rows = new Map<string, IRow>();
}

/**
 * Export ``body`` through the workspace server, showing the progress in a dialog
 * (closed when the export ends); resolves with the server's answer, throws an
 * Error with the server's message when it refused.
 */
export async function exportWithProgress<T>(
  body: Record<string, unknown>,
  trans: TranslationBundle
): Promise<T> {
  const settings = ServerConnection.makeSettings();
  const url = URLExt.join(settings.baseUrl, 'ecluse', 'export');
  const progress = new ExportProgress(trans);
  const dialog = new Dialog({
    title: trans.__('Sending the files to the airlock'),
    body: progress,
    buttons: [Dialog.okButton({ label: trans.__('Hide') })]
  });
  dialog.addClass('ecluse-export-progress-dialog');
  void dialog.launch();
  try {
    const response = await ServerConnection.makeRequest(
      url,
      { method: 'POST', body: JSON.stringify({ ...body, progress: true }) },
      settings
    );
    if (!response.ok || !response.body) {
      let message = `${response.status} ${response.statusText}`;
      try {
        const data = await response.json();
        message = data?.error?.message || data?.message || message;
      } catch {
        // not JSON: the status says it
      }
      throw new Error(message);
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffered = '';
    for (;;) {
      const { value, done } = await reader.read();
      buffered += decoder.decode(value ?? new Uint8Array(), { stream: !done });
      let newline = buffered.indexOf('\n');
      while (newline >= 0) {
        const line = buffered.slice(0, newline).trim();
        buffered = buffered.slice(newline + 1);
        newline = buffered.indexOf('\n');
        if (!line) {
          continue;
        }
        const event = JSON.parse(line) as IProgressEvent;
        if (event.error) {
          throw new Error(event.error.message);
        }
        if (event.result !== undefined) {
          return event.result as T;
        }
        progress.report(event);
      }
      if (done) {
        throw new Error(trans.__('The export stopped before it ended; see the Airlock panel.'));
      }
    }
  } finally {
    dialog.dispose();
  }
}
