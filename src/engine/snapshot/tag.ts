import { ForkdError } from '../../errors.js';

export const TAG_PATTERN = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$/;

/** Every tag that enters forkd (CLI, API, pack manifests) passes through here. */
export function validateTag(tag: unknown): string {
  if (typeof tag !== 'string' || !TAG_PATTERN.test(tag)) {
    throw new ForkdError('FORKD_ERR_BAD_INPUT', `invalid snapshot tag ${JSON.stringify(tag)}`, {
      hint: 'a tag is 1-64 characters of A-Z a-z 0-9 _ . - and does not start with . or -',
    });
  }
  return tag;
}
