import { API } from '../../api/routes.js';
import type { HeartbeatReply, OwnerRemovedReply } from '../../api/types.js';
import { ForkdError } from '../../errors.js';
import type { DaemonContext } from '../context.js';
import { renew } from '../ledger.js';
import type { Router } from '../router.js';

/** An owner's routes: a heartbeat renews the leases of all its sandboxes, a delete kills them all. */
export function ownerRoutes(router: Router, ctx: DaemonContext): void {
  const { ledger } = ctx;
  router
    .on(API.heartbeat, async ({ params }) => {
      const owned = ledger.ownedBy(params.label);
      if (!owned.length) {
        throw new ForkdError('FORKD_ERR_NOT_FOUND', `owner ${params.label} holds no sandboxes`, {
          hint: 'fork with "owner": {"label": ...} first; a reaped or deleted owner is gone',
        });
      }
      const json: HeartbeatReply = {
        owner: params.label,
        sandboxes: owned.length,
        renewed: owned.filter(renew).length,
      };
      return { status: 200, json };
    })
    .on(API.deleteOwner, async ({ params }) => {
      const owned = ledger.ownedBy(params.label).filter((s) => ledger.release(s));
      await Promise.all(owned.map((s) => s.vm.kill()));
      const json: OwnerRemovedReply = { owner: params.label, removed: owned.map((s) => s.id) };
      return { status: 200, json };
    });
}
