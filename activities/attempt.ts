// Shared by activities whose retry must redo what an earlier attempt may have half done.
import { Context } from '@temporalio/activity';

/**
 * True on an activity's first attempt: nothing of its work can have been done by an earlier one. Outside an
 * activity (a direct call, e.g. from a script or a unit test) it answers `outsideActivity`: the caller says
 * which answer is the safe one for it.
 */
export function isFirstAttempt(outsideActivity: boolean): boolean {
  try {
    return Context.current().info.attempt === 1;
  } catch {
    return outsideActivity;
  }
}
