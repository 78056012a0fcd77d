/**
 * Écluse workspace: "Request export…" in the file browser and the Airlock panel.
 *
 * The server extension (ecluse_workspace) does the work: it checks the paths,
 * streams the files to the airlock with the workspace's own token and lists
 * the project's requests. Nothing here is a security boundary: the export
 * guard lives on the server.
 *
 * Every string goes through JupyterLab's translation API (ITranslator), in the
 * `ecluse_workspace` gettext domain: its French catalogue is
 * ecluse_workspace/locale/fr_FR/LC_MESSAGES/ecluse_workspace.json, found by
 * jupyterlab_server through the package's `jupyterlab.locale` entry point.
 */
import {
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { Dialog, ICommandPalette, showDialog, showErrorMessage } from '@jupyterlab/apputils';
import { URLExt } from '@jupyterlab/coreutils';
import { IDefaultFileBrowser } from '@jupyterlab/filebrowser';
import { ServerConnection } from '@jupyterlab/services';
import { ITranslator, nullTranslator, TranslationBundle } from '@jupyterlab/translation';
import { Widget } from '@lumino/widgets';

import { registerCheck } from './check';
import { dataPlugin } from './data';
import { el } from './dom';
import { exportWithProgress } from './exportprogress';

const COMMAND = 'ecluse:request-export';
const PANEL_ID = 'ecluse-airlock-panel';
const REFRESH_MS = 5000;
/** The gettext domain of this extension's strings. */
const DOMAIN = 'ecluse_workspace';

interface IExportFile {
  name: string;
  path: string;
  size: number;
  verdict: string | null;
  supporting?: boolean;
  needs_context?: boolean;
}

/** What the researcher says about one file: the checkers read it. */
interface IFileDescription {
  context: string;
  controls: string;
  supporting: boolean;
}

interface IRequestItem {
  id: string;
  title: string;
  state: string;
  requester: string;
  approvals: number;
  required_approvals: number;
  url: string;
  files: {
    name: string;
    verdict: string;
    size: number;
    supporting?: boolean;
    needs_context?: boolean;
  }[];
  comments: { reviewer: string; decision: string; comment: string }[];
}

class ApiError extends Error {}

async function api<T>(path: string, init: RequestInit = {}): Promise<T> {
  const settings = ServerConnection.makeSettings();
  const url = URLExt.join(settings.baseUrl, 'ecluse', path);
  const response = await ServerConnection.makeRequest(url, init, settings);
  let data: any = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (!response.ok) {
    const message =
      data?.error?.message || data?.message || `${response.status} ${response.statusText}`;
    throw new ApiError(message);
  }
  return data as T;
}

interface IExportForm {
  title: string;
  justification: string;
  files: Record<string, IFileDescription>;
}

/** The body of the "Request export" dialog: title, justification, the files. */
class ExportForm extends Widget implements Dialog.IBodyWidget<IExportForm> {
  constructor(paths: string[], trans: TranslationBundle) {
    super();
    this.addClass('ecluse-export-form');
    const node = this.node;
    node.appendChild(
      el('p', {}, trans.__('Files to export (checked, then reviewed by two output checkers):'))
    );
    const list = el('ul', { class: 'ecluse-export-files' });
    paths.forEach((p, i) => {
      const li = el('li', { 'data-path': p });
      li.appendChild(el('div', {}, p));
      // context and controls: required by the airlock for a file that fails its checks
      const more = el('details', { class: 'ecluse-export-describe' });
      more.appendChild(el('summary', {}, trans.__('Context, controls, supporting file')));
      const context = el('textarea', {
        class: 'ecluse-export-context jp-mod-styled',
        'aria-label': trans.__('Context of %1', p),
        placeholder: trans.__('Context: what this output is, what each number counts')
      });
      const controls = el('textarea', {
        class: 'ecluse-export-controls jp-mod-styled',
        'aria-label': trans.__('Statistical controls of %1', p),
        placeholder: trans.__('Statistical controls applied: rounding, suppression, thresholds')
      });
      const supporting = el('input', {
        type: 'checkbox',
        class: 'ecluse-export-supporting',
        id: `ecluse-export-supporting-${i}`
      });
      const label = el(
        'label',
        { for: `ecluse-export-supporting-${i}` },
        ' ' + trans.__('Supporting file (e.g. unrounded counts): checkers see it, never released')
      );
      more.append(context, controls, el('div', {}, ''));
      (more.lastChild as HTMLElement).append(supporting, label);
      li.appendChild(more);
      list.appendChild(li);
      this.described.push({ path: p, context, controls, supporting });
    });
    node.appendChild(list);
    node.appendChild(el('label', { for: 'ecluse-export-title' }, trans.__('Title')));
    this.title_ = el('input', {
      id: 'ecluse-export-title',
      class: 'ecluse-export-title jp-mod-styled',
      type: 'text',
      maxlength: '200',
      placeholder: trans.__('e.g. Table 2 of the paper')
    });
    node.appendChild(this.title_);
    node.appendChild(el('label', { for: 'ecluse-export-justification' }, trans.__('Justification')));
    this.justification = el('textarea', {
      id: 'ecluse-export-justification',
      class: 'ecluse-export-justification jp-mod-styled',
      placeholder: trans.__('Why must these files leave the project? Who will see them?')
    });
    node.appendChild(this.justification);
    node.appendChild(
      el(
        'p',
        { class: 'ecluse-export-note' },
        trans.__(
          'Row-level data is never released. Released files are downloaded from the airlock, outside the workspace.'
        )
      )
    );
  }

  getValue(): IExportForm {
    const files: Record<string, IFileDescription> = {};
    for (const d of this.described) {
      const about = {
        context: d.context.value.trim(),
        controls: d.controls.value.trim(),
        supporting: d.supporting.checked
      };
      if (about.context || about.controls || about.supporting) {
        files[d.path] = about;
      }
    }
    return {
      title: this.title_.value.trim(),
      justification: this.justification.value.trim(),
      files
    };
  }

  private described: {
    path: string;
    context: HTMLTextAreaElement;
    controls: HTMLTextAreaElement;
    supporting: HTMLInputElement;
  }[] = [];
  private title_: HTMLInputElement;
  private justification: HTMLTextAreaElement;
}

/** The left-side "Airlock" panel: this project's requests, refreshed while visible. */
class AirlockPanel extends Widget {
  constructor(trans: TranslationBundle) {
    super();
    this.trans = trans;
    this.id = PANEL_ID;
    this.title.label = trans.__('Airlock');
    this.title.caption = trans.__('Export requests of this project');
    this.title.closable = true;
    this.addClass('ecluse-airlock-panel');
    this.header = el('h2', {}, trans.__('Airlock'));
    this.body = el('div', { class: 'ecluse-requests' });
    const refresh = el('button', { class: 'jp-mod-styled ecluse-refresh' }, trans.__('Refresh'));
    refresh.addEventListener('click', () => void this.refresh());
    this.node.append(this.header, refresh, this.body);
  }

  protected onAfterShow(): void {
    void this.refresh();
    if (this.timer === null) {
      this.timer = window.setInterval(() => {
        if (this.isVisible) {
          void this.refresh();
        }
      }, REFRESH_MS);
    }
  }

  protected onAfterHide(): void {
    if (this.timer !== null) {
      window.clearInterval(this.timer);
      this.timer = null;
    }
  }

  dispose(): void {
    this.onAfterHide();
    super.dispose();
  }

  async refresh(): Promise<void> {
    let data: { project: string; requests: IRequestItem[] };
    try {
      data = await api('requests');
    } catch (e) {
      this.body.replaceChildren(el('p', { class: 'ecluse-error' }, String((e as Error).message)));
      return;
    }
    this.header.textContent = this.trans.__('Airlock — %1', data.project);
    if (!data.requests.length) {
      this.body.replaceChildren(
        el('p', {}, this.trans.__('No export requests yet. Right-click a file: “Request export…”.'))
      );
      return;
    }
    const items = data.requests.map(r => this.renderRequest(r));
    this.body.replaceChildren(...items);
  }

  private renderRequest(r: IRequestItem): HTMLElement {
    const item = el('div', { class: 'ecluse-request', 'data-id': r.id, 'data-state': r.state });
    const head = el('div', {});
    head.appendChild(el('span', { class: 'ecluse-state', 'data-state': r.state }, r.state));
    head.appendChild(el('span', { class: 'ecluse-request-title' }, r.title));
    item.appendChild(head);
    item.appendChild(
      el(
        'div',
        { class: 'ecluse-export-note' },
        this.trans.__('%1 · %2/%3 approvals', r.requester, r.approvals, r.required_approvals)
      )
    );
    const files = el('ul', {});
    for (const f of r.files) {
      const li = el('li', { class: 'ecluse-file', 'data-name': f.name });
      li.appendChild(el('span', {}, `${f.name} `));
      li.appendChild(el('span', { class: 'ecluse-verdict', 'data-verdict': f.verdict }, f.verdict));
      if (f.supporting) {
        li.appendChild(el('span', { class: 'ecluse-supporting' }, ' supporting, not released'));
      }
      if (f.needs_context) {
        li.appendChild(el('span', { class: 'ecluse-needs-context' }, ' needs context'));
      }
      files.appendChild(li);
    }
    item.appendChild(files);
    for (const c of r.comments) {
      item.appendChild(
        el('div', { class: 'ecluse-comment' }, `${c.reviewer} (${c.decision}): ${c.comment}`)
      );
    }
    const label =
      r.state === 'released'
        ? this.trans.__('Download from the airlock')
        : this.trans.__('Open in the airlock');
    item.appendChild(
      el('a', { href: r.url, target: '_blank', rel: 'noopener', class: 'ecluse-link' }, label)
    );
    return item;
  }

  private trans: TranslationBundle;
  private header: HTMLElement;
  private body: HTMLElement;
  private timer: number | null = null;
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: '@ecluse/workspace:plugin',
  description: 'Request export… in the file browser and the Airlock panel.',
  autoStart: true,
  requires: [IDefaultFileBrowser],
  optional: [ICommandPalette, ILayoutRestorer, ITranslator],
  activate: (
    app: JupyterFrontEnd,
    browser: IDefaultFileBrowser,
    palette: ICommandPalette | null,
    restorer: ILayoutRestorer | null,
    translator: ITranslator | null
  ) => {
    const trans = (translator ?? nullTranslator).load(DOMAIN);
    const panel = new AirlockPanel(trans);
    app.shell.add(panel, 'left', { rank: 900 });
    if (restorer) {
      restorer.add(panel, PANEL_ID);
    }

    app.commands.addCommand(COMMAND, {
      label: trans.__('Request export…'),
      caption: trans.__('Ask the airlock to export the selected files'),
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
        const result = await showDialog({
          title: trans.__('Request export'),
          body: new ExportForm(paths, trans),
          buttons: [
            Dialog.cancelButton(),
            Dialog.okButton({ label: trans.__('Request export') })
          ],
          focusNodeSelector: 'input'
        });
        if (!result.button.accept || !result.value) {
          return;
        }
        try {
          // per file: bytes sent, then "checking…" until the airlock's verdict
          const created = await exportWithProgress<{
            id: string;
            state: string;
            files: IExportFile[];
            submit_refused?: string;
          }>(
            {
              paths,
              title: result.value.title,
              justification: result.value.justification,
              files: result.value.files
            },
            trans
          );
          const verdicts = created.files
            .map(f => `${f.name}: ${f.verdict}${f.supporting ? ' ' + trans.__('(supporting)') : ''}`)
            .join('\n');
          const refused = created.submit_refused
            ? '\n' + trans.__('Not submitted: %1', created.submit_refused) + '\n' + trans.__('Complete it in the airlock.')
            : '';
          await showDialog({
            title: created.submit_refused
              ? trans.__('Export kept as a draft')
              : trans.__('Export requested'),
            body: trans.__('Request %1 is %2.', created.id, created.state) + `\n${verdicts}${refused}`,
            buttons: [Dialog.okButton()]
          });
          app.shell.activateById(PANEL_ID);
          void panel.refresh();
        } catch (e) {
          await showErrorMessage(trans.__('Export refused'), (e as Error).message);
        }
      }
    });

    app.contextMenu.addItem({
      command: COMMAND,
      selector: '.jp-DirListing-item[data-isdir="false"]',
      rank: 1
    });
    if (palette) {
      palette.addItem({ command: COMMAND, category: trans.__('Écluse') });
    }
    registerCheck(app, browser, palette, trans); // "Check for export" (check.ts)
  }
};

export default [plugin, dataPlugin];
